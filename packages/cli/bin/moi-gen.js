#!/usr/bin/env node
// The moi-gen binary: runs the TypeScript sources through tsx (no build step).
import { register } from 'tsx/esm/api';

register();
await import('../src/bin.ts');
