#!/usr/bin/env node
// Prints the C++ sources of one group for binding.gyp (gyp has no globbing):
//   core   native/common, native/engine (recursively), native/cpu without SIMD files and tests
//   avx2 / avx512   native/cpu/*_avx2.cpp / *_avx512.cpp
//   napi   native/napi/*.cpp
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';

const group = process.argv[2];
function walk(dir, recursive) {
  const out = [];
  for (const f of readdirSync(dir).sort()) {
    const p = path.join(dir, f);
    if (statSync(p).isDirectory()) {
      if (recursive) out.push(...walk(p, true));
    } else if (p.endsWith('.cpp') && !p.endsWith('_test.cpp')) out.push(p);
  }
  return out;
}
const simd = (f) => /_(avx2|avx512)\.cpp$/.test(f);
let files = [];
if (group === 'core') files = [...walk('native/common', false), ...walk('native/engine', true), ...walk('native/cpu', false).filter((f) => !simd(f))];
else if (group === 'avx2') files = walk('native/cpu', false).filter((f) => f.endsWith('_avx2.cpp'));
else if (group === 'avx512') files = walk('native/cpu', false).filter((f) => f.endsWith('_avx512.cpp'));
else if (group === 'napi') files = walk('native/napi', false);
process.stdout.write(files.join(' '));
