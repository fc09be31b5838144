#!/usr/bin/env node
// `npm test`: type-checks and compiles the TypeScript (tsc), runs the native test runner
// (build/xpsr_tests: kernels, weight readers, parity of every network on the CPU backend and, when built
// with CUDA and a GPU is present, on the CUDA backend), then the ava suite (test/**/*.test.mjs).
// then the formatter and linter check (`npm run lint`: Biome for TS/JS, clang-format for C++/CUDA; set
// XPSR_TEST_LINT=off to skip it while the tree is not formatted yet).
// Ends with one summary line "test: N passed, M failed". Exit code 1 on any failure.
//   node scripts/test.mjs [--native-only | --js-only] [ava args...]
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const nativeOnly = args.includes('--native-only');
const jsOnly = args.includes('--js-only');
const avaArgs = args.filter((a) => a !== '--native-only' && a !== '--js-only');
let passed = 0;
let failed = 0;

function run(label, cmd, cmdArgs, parse) {
  process.stderr.write(`\n== ${label}: ${[cmd, ...cmdArgs].join(' ')}\n`);
  const r = spawnSync(cmd, cmdArgs, { cwd: root, encoding: 'utf8', maxBuffer: 1 << 28, env: process.env });
  process.stdout.write(r.stdout ?? '');
  process.stderr.write(r.stderr ?? '');
  const counts = parse ? parse(`${r.stdout}\n${r.stderr}`) : null;
  if (counts) {
    passed += counts.passed;
    failed += counts.failed;
  }
  if (r.status !== 0) {
    if (!counts || counts.failed === 0) failed += 1; // a crash or a failed step counts as a failure
    return false;
  }
  return true;
}

// 1. TypeScript.
if (!nativeOnly) {
  const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');
  run('typescript', process.execPath, [tsc, '-p', 'tsconfig.json']);
}

// 2. Native tests.
if (!jsOnly) {
  const exe = ['build/xpsr_tests', 'build/Release/xpsr_tests'].map((p) => path.join(root, p)).find((p) => existsSync(p));
  if (!exe) {
    process.stderr.write('native test runner not built (build/xpsr_tests): run `npm run build:native`\n');
    failed += 1;
  } else {
    run('native tests', exe, [], (out) => {
      const m = /native: (\d+) passed, (\d+) failed/.exec(out);
      return m ? { passed: Number(m[1]), failed: Number(m[2]) } : null;
    });
  }
}

// 3. ava.
if (!nativeOnly) {
  const ava = path.join(root, 'node_modules', 'ava', 'entrypoints', 'cli.mjs');
  run('ava', process.execPath, [ava, ...avaArgs], (out) => {
    const p = /(\d+) tests? passed/.exec(out);
    const f = /(\d+) tests? failed/.exec(out);
    const k = /(\d+) known failure/.exec(out);
    if (!p && !f) return null;
    // with failures ava prints no "N tests passed" line: count its ✔ lines instead
    const passedLines = (out.match(/^\s*✔ /gm) ?? []).length;
    return { passed: p ? Number(p[1]) : passedLines, failed: (f ? Number(f[1]) : 0) + (k ? Number(k[1]) : 0) };
  });
}

// 4. Formatting and lint (one check).
if (!nativeOnly) {
  if (/^(off|0|false|no)$/i.test(process.env.XPSR_TEST_LINT ?? '')) {
    process.stderr.write('\n== lint: skipped (XPSR_TEST_LINT=off)\n');
  } else if (run('lint', process.execPath, [path.join(root, 'scripts', 'format.mjs'), '--check'])) {
    passed += 1;
  }
}

process.stdout.write(`\ntest: ${passed} passed, ${failed} failed\n`);
process.exit(failed ? 1 : 0);
