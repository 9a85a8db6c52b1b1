/** Hugging Face hub access: resolve a model id or folder to a local directory, downloading into the shared cache. */
export { resolveModel, hubToken, OPTIONAL_FILES, DEFAULT_ENDPOINT } from './resolve.ts';
export type { ResolveOptions, DownloadProgress } from './resolve.ts';
export {
  hubCacheDir,
  hfHomeDir,
  repoFolderName,
  findCachedSnapshot,
  hasModelFiles,
  normalizeEtag,
  isCommitHash,
} from './cache.ts';
export { fileUrl } from './download.ts';
export type { FileMeta, HubContext } from './download.ts';
