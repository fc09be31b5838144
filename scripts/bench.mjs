#!/usr/bin/env node
// `npm run bench -- [--cpu | --cuda | --device D] [--latent 64] [--steps N] [--only step,vae,text]`
// Runs the native benchmark (build/xpsr_bench: full SD-1.5 + XPSR sizes with synthetic weights; a GEMM
// baseline measured in the same run) and prints its JSON on stdout (also saved under .bench/).
// Numbers are measurements, never test assertions. Figures with their machine go in docs/benchmarks.md.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const argv = process.argv.slice(2);
const args = [];
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === '--cpu') args.push('--device', 'cpu');
  else if (argv[i] === '--cuda') args.push('--device', 'cuda');
  else args.push(argv[i]);
}
const exe = ['build/xpsr_bench', 'build/Release/xpsr_bench'].map((p) => path.join(root, p)).find((p) => existsSync(p));
if (!exe) {
  process.stderr.write('build/xpsr_bench is not built: run `npm run build:native` (needs CMake)\n');
  process.exit(1);
}
const r = spawnSync(exe, args, { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 26 });
if (r.status !== 0) process.exit(r.status ?? 1);
process.stdout.write(r.stdout);
mkdirSync(path.join(root, '.bench'), { recursive: true });
const file = path.join(root, '.bench', `bench-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
writeFileSync(file, r.stdout);
process.stderr.write(`saved ${path.relative(root, file)}\n`);
