/**
 * The build behind the moi-gen binary: each workspace package's `src/` compiled to JavaScript in
 * its `dist/`, file for file (esbuild strips the types; no bundling).
 *
 * - The tree and its depth are kept, so what a module reads relative to its own URL (the wasm
 *   kernels' `.wat` text, `package.json`, the repository root) resolves as it does from the
 *   sources; files that are not TypeScript are copied beside the compiled ones.
 * - `./x.ts` imports become `./x.js`; `@moi/NAME[/sub]` imports point at that package's `dist/`
 *   (its `exports` entry with src → dist); every other import is left to Node, which resolves it
 *   from the package's own node_modules as it does for the sources (optional dependencies too).
 * - `ensureBuilt()` compares every source file (path and mtime), each package.json and this
 *   file with the last build's stamp and rebuilds when anything differs, so the binary never
 *   runs stale code. A lock directory keeps concurrent starts from building twice; each
 *   package's new `dist/` is written aside and renamed into place, the stamp last.
 *
 * `node packages/cli/bin/build.js` builds now (when stale; `--force`: always).
 * Library users and tests import the TypeScript sources (through tsx); only the binary runs this.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const PACKAGES = path.join(ROOT, 'packages');
const STAMP = path.join(PACKAGES, 'cli', 'dist', '.build-stamp.json');
const LOCK = path.join(PACKAGES, 'cli', '.build-lock');
/** A lock older than this was left by a build that died: taken over. */
const LOCK_STALE_MS = 60_000;

// ---- what the build depends on

/** The workspace packages that have a src/ folder, by folder name. */
function packageNames() {
  return fs
    .readdirSync(PACKAGES, { withFileTypes: true })
    .filter((d) => d.isDirectory() && fs.existsSync(path.join(PACKAGES, d.name, 'src')))
    .map((d) => d.name)
    .sort();
}

/** Every file under `dir`, as paths relative to `dir`. */
function filesUnder(dir) {
  const out = [];
  const walk = (rel) => {
    for (const d of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${d.name}` : d.name;
      if (d.isDirectory()) walk(r);
      else if (d.isFile() || d.isSymbolicLink()) out.push(r);
    }
  };
  walk('');
  return out.sort();
}

/** path (relative to the repository) → mtime of every input: sources, package.json files, this file. */
function inputs() {
  const out = {};
  const add = (file) => {
    out[path.relative(ROOT, file)] = fs.statSync(file).mtimeMs;
  };
  add(fileURLToPath(import.meta.url));
  for (const name of packageNames()) {
    add(path.join(PACKAGES, name, 'package.json'));
    for (const f of filesUnder(path.join(PACKAGES, name, 'src'))) add(path.join(PACKAGES, name, 'src', f));
  }
  return out;
}

/** True when the last build's stamp lists exactly the inputs there are now, with the same mtimes. */
export function isFresh() {
  let stamp;
  try {
    stamp = JSON.parse(fs.readFileSync(STAMP, 'utf8'));
  } catch {
    return false;
  }
  const now = inputs();
  const keys = Object.keys(now);
  return keys.length === Object.keys(stamp.inputs ?? {}).length && keys.every((k) => stamp.inputs[k] === now[k]);
}

// ---- the build

/** `packages/NAME/src/a/b.ts` → `packages/NAME/dist/a/b.js` (the file's place once built). */
function distPathOf(srcFile) {
  const rel = path.relative(PACKAGES, srcFile).split(path.sep);
  if (rel[1] !== 'src') throw new Error(`not a package source file: ${srcFile}`);
  return path.join(PACKAGES, rel[0], 'dist', ...rel.slice(2)).replace(/\.([cm]?)ts$/, '.$1js');
}

/** A relative import specifier from the module at `fromFile` to `toFile`. */
function specifier(fromFile, toFile) {
  const rel = path.relative(path.dirname(fromFile), toFile).split(path.sep).join('/');
  return rel.startsWith('.') ? rel : `./${rel}`;
}

/** `@moi/NAME[/sub]` imported from `importer`: the specifier of its compiled entry. */
function workspaceTarget(name, sub, importer) {
  const dir = path.join(PACKAGES, name);
  const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
  const key = sub ? `.${sub}` : '.';
  const entry = typeof pkg.exports === 'string' && key === '.' ? pkg.exports : pkg.exports?.[key];
  if (typeof entry !== 'string' || !entry.startsWith('./src/')) {
    throw new Error(
      `${importer}: @moi/${name}${sub ?? ''} is not a ./src/ export of ${path.relative(ROOT, dir)}/package.json`,
    );
  }
  return specifier(distPathOf(importer), distPathOf(path.join(dir, entry)));
}

/** esbuild plugin: every import stays an import (nothing is bundled), with its specifier rewritten. */
const rewriteImports = {
  name: 'moi-rewrite-imports',
  setup(build) {
    build.onResolve({ filter: /.*/ }, (args) => {
      if (args.kind === 'entry-point') return undefined;
      const spec = args.path;
      if (spec.startsWith('./') || spec.startsWith('../')) {
        return { path: spec.replace(/\.([cm]?)ts$/, '.$1js'), external: true };
      }
      const ws = /^@moi\/([^/]+)(\/.+)?$/.exec(spec);
      if (ws) return { path: workspaceTarget(ws[1], ws[2], args.importer), external: true };
      return { path: spec, external: true };
    });
  },
};

/** Compile every package into `packages/NAME/<tmp>/`, then rename each into place as dist/. */
async function build() {
  const { build: esbuild } = await import('esbuild');
  const tmp = `.dist-new-${process.pid}`;
  const names = packageNames();
  const stamp = { inputs: inputs() };
  const entryPoints = [];
  try {
    for (const name of names) {
      const src = path.join(PACKAGES, name, 'src');
      for (const f of filesUnder(src)) {
        if (/\.[cm]?ts$/.test(f) && !f.endsWith('.d.ts')) {
          entryPoints.push({
            in: path.join(src, f),
            out: path.join('packages', name, tmp, f.replace(/\.[cm]?ts$/, '')),
          });
        } else if (!f.endsWith('.d.ts')) {
          const to = path.join(PACKAGES, name, tmp, f);
          fs.mkdirSync(path.dirname(to), { recursive: true });
          fs.copyFileSync(path.join(src, f), to);
        }
      }
    }
    await esbuild({
      entryPoints,
      outdir: ROOT,
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node20',
      plugins: [rewriteImports],
      logLevel: 'silent',
      tsconfigRaw: { compilerOptions: { useDefineForClassFields: true } },
    });
    fs.writeFileSync(path.join(PACKAGES, 'cli', tmp, path.basename(STAMP)), JSON.stringify(stamp));
    // cli last: its stamp says the whole build is in place
    for (const name of [...names.filter((n) => n !== 'cli'), 'cli']) {
      const dist = path.join(PACKAGES, name, 'dist');
      const old = path.join(PACKAGES, name, `.dist-old-${process.pid}`);
      if (fs.existsSync(dist)) fs.renameSync(dist, old);
      fs.renameSync(path.join(PACKAGES, name, tmp), dist);
      fs.rmSync(old, { recursive: true, force: true });
    }
  } finally {
    for (const name of names) fs.rmSync(path.join(PACKAGES, name, tmp), { recursive: true, force: true });
  }
}

// ---- once at a time

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Take the build lock (waiting while another live build holds it); returns its release. */
async function lock() {
  for (;;) {
    try {
      fs.mkdirSync(LOCK);
      return () => fs.rmSync(LOCK, { recursive: true, force: true });
    } catch (err) {
      if (err.code !== 'EEXIST') throw err;
      let age;
      try {
        age = Date.now() - fs.statSync(LOCK).mtimeMs;
      } catch {
        continue;
      } // released meanwhile
      if (age > LOCK_STALE_MS) fs.rmSync(LOCK, { recursive: true, force: true });
      else await sleep(50);
    }
  }
}

/** Build unless the last build is fresh (or `force`). Returns true when it built. */
export async function ensureBuilt({ force = false } = {}) {
  if (!force && isFresh()) return false;
  const release = await lock();
  try {
    if (!force && isFresh()) return false; // another process built it while this one waited
    await build();
    return true;
  } finally {
    release();
  }
}

/** Messages of a failed esbuild run (file:line: text), or the error's own message. */
export function describeBuildError(err) {
  const errors = err?.errors;
  if (!Array.isArray(errors) || errors.length === 0) return err instanceof Error ? err.message : String(err);
  return errors
    .slice(0, 5)
    .map((e) => `${e.location ? `${e.location.file}:${e.location.line}: ` : ''}${e.text}`)
    .join('\n');
}

if (process.argv[1] && pathToFileURL(fs.realpathSync(process.argv[1])).href === import.meta.url) {
  const t0 = performance.now();
  try {
    const built = await ensureBuilt({ force: process.argv.includes('--force') });
    console.log(
      built
        ? `moi-gen: built packages/*/dist in ${Math.round(performance.now() - t0)} ms`
        : 'moi-gen: packages/*/dist is up to date',
    );
  } catch (err) {
    process.stderr.write(`moi-gen: error: the build failed:\n${describeBuildError(err)}\n`);
    process.exitCode = 1;
  }
}
