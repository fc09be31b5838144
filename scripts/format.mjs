#!/usr/bin/env node
// The project's formatter and linter in one command:
//   node scripts/format.mjs --check   (npm run lint)    report, change nothing; exit 1 on any problem
//   node scripts/format.mjs --write   (npm run format)  rewrite files in place
// TypeScript and JavaScript (lib/, test/, scripts/): Biome (pinned in package.json, config biome.json),
// formatting and lint rules. C++ and CUDA (native/): clang-format >= 14 (config .clang-format), which CI
// installs from Debian (apt-get install clang-format).
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const write = process.argv.includes('--write');
if (!write && !process.argv.includes('--check')) {
  process.stderr.write('usage: node scripts/format.mjs --check | --write\n');
  process.exit(2);
}

function nativeSources(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) out.push(...nativeSources(p));
    else if (/\.(cpp|h|cu|cuh)$/.test(name)) out.push(p);
  }
  return out;
}

let failed = false;
const step = (label, cmd, args) => {
  process.stderr.write(`== ${label}\n`);
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' });
  if (r.error) {
    process.stderr.write(`${label}: cannot run ${cmd} (${r.error.message})\n`);
    failed = true;
  } else if (r.status !== 0) {
    failed = true;
  }
};

const biome = path.join(root, 'node_modules', '@biomejs', 'biome', 'bin', 'biome');
step('biome (TypeScript, JavaScript)', process.execPath, [
  biome,
  'check',
  ...(write ? ['--write'] : ['--max-diagnostics=50']),
  'lib',
  'test',
  'scripts',
]);

const files = nativeSources(path.join(root, 'native')).map((f) => path.relative(root, f));
const clang = spawnSync('clang-format', ['--version'], { encoding: 'utf8' });
if (clang.error) {
  process.stderr.write('== clang-format (C++, CUDA)\nclang-format is not installed (apt-get install clang-format)\n');
  failed = true;
} else {
  const label = `clang-format (C++, CUDA: ${files.length} files; ${clang.stdout.trim()})`;
  // clang-format 14 needs a few passes to settle on runs of macro calls (XPSR_ROW_* in native/cpu)
  if (write) for (let pass = 0; pass < 4; pass++) step(label, 'clang-format', ['-i', '--style=file', ...files]);
  else step(label, 'clang-format', ['--dry-run', '-Werror', '--style=file', ...files]);
}
process.exit(failed ? 1 : 0);
