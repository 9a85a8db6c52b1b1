#!/usr/bin/env node
// The moi-gen binary: runs the CLI compiled to JavaScript (packages/*/dist), building it first
// when a source changed since the last build (build.js), so it never runs stale code.
import { describeBuildError, ensureBuilt } from './build.js';

try {
  await ensureBuilt();
} catch (err) {
  process.stderr.write(`moi-gen: error: building the CLI (packages/*/dist) failed:\n${describeBuildError(err)}\n`);
  process.exit(1);
}
const { cli } = await import('../dist/bin.js');
await cli(process.argv.slice(2));
