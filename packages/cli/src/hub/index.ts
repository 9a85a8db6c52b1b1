/** Hugging Face hub access: resolve a model id or folder to a local directory, downloading into the shared cache. */
import type { ModelResolver } from '@moi/engine';
import { resolveModel, type ResolveOptions } from './resolve.ts';

export { resolveModel };
export { hubToken, OPTIONAL_FILES, DEFAULT_ENDPOINT } from './resolve.ts';
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

/** A resolver for `Engine.load`: a local folder, or a hub id from the HF cache (downloaded when missing). */
export function hubResolver(opts: ResolveOptions = {}): ModelResolver {
  return (model) => resolveModel(model, opts);
}
