#!/usr/bin/env node
// Part of `prepare` (after tsc): makes the package's own `xpsr` command runnable in a clone with
// `npx xpsr ...`. npm links the bins of dependencies into node_modules/.bin but never the root package's
// own, so this links node_modules/.bin/xpsr -> dist/lib/cli/main.js (and marks it executable).
import { chmodSync, existsSync, mkdirSync, rmSync, symlinkSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const target = path.join(root, 'dist', 'lib', 'cli', 'main.js');
if (!existsSync(target)) {
  process.stderr.write('[xpsr-native] dist/lib/cli/main.js is missing (tsc failed?); xpsr command not linked\n');
  process.exit(0);
}
chmodSync(target, 0o755);
const binDir = path.join(root, 'node_modules', '.bin');
if (!existsSync(path.join(root, 'node_modules'))) process.exit(0); // installed as a dependency: npm links it
mkdirSync(binDir, { recursive: true });
const link = path.join(binDir, 'xpsr');
rmSync(link, { force: true });
symlinkSync(path.relative(binDir, target), link);
