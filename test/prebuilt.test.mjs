// Prebuilt binaries (issue 15): the ELF reader behind build-info.json and the glibc-floor checks, the
// loader order (XPSR_NATIVE_ADDON -> local build -> prebuilt package -> error), and the demo's model and
// tokenizer made from data/demo instead of test fixtures. The packed tarballs themselves are tested by
// scripts/test-packed.mjs (.ci/run).
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { copyFileSync, cpSync, linkSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { root, fixtures } from './helpers/fixtures.mjs';
import { readElf, compareVersions } from '../scripts/lib/elf.mjs';
import { describeEngineAddon } from '../scripts/lib/build-info.mjs';
import { ClipTokenizer } from '../dist/lib/index.js';
import { clipVocabFromMerges, clipTokenizerFromGzippedMerges } from '../dist/lib/demo/tokenizer.js';

const addon = path.join(root, 'build', 'Release', 'xpsr.node');
const tmp = () => mkdtempSync(path.join(tmpdir(), 'xpsr-prebuilt-'));

function tool(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 1 << 26 });
  return r.status === 0 ? r.stdout : null;
}

test('the ELF reader agrees with readelf on NEEDED libraries and symbol versions', (t) => {
  const elf = readElf(addon);
  const dyn = tool('readelf', ['-dW', addon]);
  const ver = tool('readelf', ['-VW', addon]);
  if (!dyn || !ver) return t.fail('readelf (binutils) is needed for this test: install binutils');
  t.deepEqual(
    elf.needed,
    [...dyn.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]),
  );
  const section = ver.slice(ver.indexOf('.gnu.version_r'));
  const want = [...new Set([...section.matchAll(/Name: (\S+)\s+Flags/g)].map((m) => m[1]))].sort();
  t.deepEqual(elf.versions, want);
  const glibc = want
    .filter((v) => v.startsWith('GLIBC_'))
    .map((v) => v.slice(6))
    .sort(compareVersions)
    .pop();
  t.is(elf.glibc, glibc);
  t.false(
    elf.needed.some((n) => n.startsWith('libcudart')),
    'cudart must be linked statically',
  );
});

test('the CUDA code found in the addon is what CMake compiled (SASS per architecture + PTX)', (t) => {
  const elf = readElf(addon);
  const ninja = readFileSync(path.join(root, 'build', 'build.ninja'), 'utf8');
  // the kernels' flags: --generate-code=arch=compute_80,code=[sm_80] (SASS) / code=[compute_80] (PTX)
  const lib = ninja
    .split('\nbuild ')
    .filter((b) => b.includes('xpsr_cuda.dir') && !b.includes('_test'))
    .join('\n');
  const sass = [...new Set([...lib.matchAll(/code=\[(sm_\d+)\]/g)].map((m) => m[1]))].sort();
  const ptx = [...new Set([...lib.matchAll(/code=\[(compute_\d+)\]/g)].map((m) => m[1]))].sort();
  if (sass.length === 0) {
    t.is(elf.cuda, null, 'a build without CUDA has no .nv_fatbin');
    t.log('this build has no CUDA backend (no nvcc): only the CPU-only case is checked');
    return;
  }
  t.deepEqual(elf.cuda.sass, sass);
  t.deepEqual(elf.cuda.ptx, ptx);
  t.true(elf.cuda.fatbins > 0);
});

test('build info matches what the addon itself reports', (t) => {
  const info = describeEngineAddon(addon, { buildDir: path.join(root, 'build'), root, justBuilt: false });
  const native = createRequire(import.meta.url)(addon).systemInfo();
  t.deepEqual(info.backends, native.backends);
  t.true(info.cpuKernels.includes('portable'));
  if (process.arch === 'x64') t.deepEqual(info.cpuKernels, ['avx2', 'avx512', 'portable']);
  t.regex(info.compiler, /^(GNU|Clang) \d+/);
  t.regex(info.requires.glibc, /^2\.\d+$/);
  t.is(info.git, null, 'the commit of an older build is not claimed');
});

// A throwaway copy of the package (dist/lib + package.json) with the places the loader looks in.
function fakeInstall({ local = false, prebuilt = false } = {}) {
  const dir = tmp();
  const pkg = path.join(dir, 'node_modules', 'xpsr-native');
  cpSync(path.join(root, 'dist', 'lib'), path.join(pkg, 'dist', 'lib'), { recursive: true });
  copyFileSync(path.join(root, 'package.json'), path.join(pkg, 'package.json'));
  const put = (folder) => {
    mkdirSync(folder, { recursive: true });
    try {
      linkSync(addon, path.join(folder, 'xpsr.node'));
    } catch {
      copyFileSync(addon, path.join(folder, 'xpsr.node'));
    }
  };
  if (local) put(path.join(pkg, 'build', 'Release'));
  if (prebuilt) {
    const p = path.join(dir, 'node_modules', '@xpsr-native', `${process.platform}-${process.arch}`);
    put(p);
    writeFileSync(path.join(p, 'package.json'), JSON.stringify({ name: `@xpsr-native/${process.platform}-${process.arch}`, version: '9.9.9' }));
    writeFileSync(path.join(p, 'build-info.json'), JSON.stringify({ backends: ['cpu'], compiler: 'test', requires: { glibc: '2.34' } }));
  }
  return { dir, pkg };
}

function whichAddon(pkg, env = {}) {
  const script = `const n = await import(${JSON.stringify(path.join(pkg, 'dist', 'lib', 'native.js'))});
    const l = await import(${JSON.stringify(path.join(pkg, 'dist', 'lib', 'addon-loader.js'))});
    try { n.loadNative(); } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })); process.exit(0); }
    const a = l.loadedAddons()[0];
    console.log(JSON.stringify({ origin: a.origin, file: a.file, where: a.where, buildInfo: a.buildInfo }));`;
  const e = { ...process.env, ...env };
  if (!('XPSR_NATIVE_ADDON' in env)) delete e.XPSR_NATIVE_ADDON;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', env: e });
  if (r.status !== 0) throw new Error(r.stderr);
  return JSON.parse(r.stdout.trim().split('\n').pop());
}

test('loader order: XPSR_NATIVE_ADDON, then a local build, then the prebuilt package', (t) => {
  const { pkg } = fakeInstall({ local: true, prebuilt: true });
  let a = whichAddon(pkg);
  t.is(a.origin, 'local build');
  t.is(a.file, path.join(pkg, 'build', 'Release', 'xpsr.node'));
  a = whichAddon(pkg, { XPSR_NATIVE_ADDON: addon });
  t.is(a.origin, 'environment');
  t.is(a.file, addon);

  const only = fakeInstall({ prebuilt: true });
  a = whichAddon(only.pkg);
  t.is(a.origin, 'prebuilt package');
  t.is(a.where, `package @xpsr-native/${process.platform}-${process.arch}@9.9.9`);
  t.is(a.file, path.join(only.dir, 'node_modules', '@xpsr-native', `${process.platform}-${process.arch}`, 'xpsr.node'));
  t.deepEqual(a.buildInfo.backends, ['cpu'], 'the build-info.json next to the file is read');
});

test('with no addon anywhere the error lists every place and says how to get one', (t) => {
  const { pkg } = fakeInstall();
  const e = whichAddon(pkg);
  t.is(e.code, 'ERR_NATIVE_MISSING');
  t.regex(e.message, /build\/Release\/xpsr\.node: not found/);
  t.regex(e.message, new RegExp(`package @xpsr-native/${process.platform}-${process.arch}: not (installed|published for this platform)`));
  t.regex(e.message, /npx xpsr build/);
  t.regex(e.message, /XPSR_NATIVE_ADDON/);
  if (process.platform === 'linux' && process.arch === 'x64') t.regex(e.message, /--omit=optional/);
});

test("the demo tokenizer: vocab.json derived from the shipped merges equals CLIP's", (t) => {
  const merges = gunzipSync(readFileSync(path.join(root, 'data', 'demo', 'clip-merges.txt.gz'))).toString('utf8');
  const tokDir = path.join(fixtures, 'model', 'tokenizer');
  t.is(merges, readFileSync(path.join(tokDir, 'merges.txt'), 'utf8'));
  const want = readFileSync(path.join(tokDir, 'vocab.json'), 'utf8');
  const got = clipVocabFromMerges(merges);
  t.deepEqual(Object.entries(JSON.parse(got)), Object.entries(JSON.parse(want)), 'same tokens, same ids, same order');
});

test('the demo tokenizer tokenizes like the SD-1.5 tokenizer folder', async (t) => {
  const ref = await ClipTokenizer.fromDirectory(path.join(fixtures, 'model', 'tokenizer'));
  const demo = JSON.parse(readFileSync(path.join(root, 'data', 'demo', 'model.json'), 'utf8'));
  const tok = clipTokenizerFromGzippedMerges(path.join(root, 'data', 'demo', 'clip-merges.txt.gz'), demo.tokenizer);
  for (const s of ['a cup of coffee on a saucer', 'The image is small and BLURRY!', 'café – naïve 東京 🙂', ''])
    t.deepEqual(tok.encode(s), ref.encode(s), s);
});

test('the demo model uses the configs of the tiny test model', (t) => {
  const demo = JSON.parse(readFileSync(path.join(root, 'data', 'demo', 'model.json'), 'utf8'));
  const cfg = (p) => JSON.parse(readFileSync(path.join(fixtures, 'model', p), 'utf8'));
  t.deepEqual(demo.text_encoder, cfg('text_encoder/config.json'));
  t.deepEqual(demo.vae, cfg('vae/config.json'));
  t.deepEqual(demo.unet, cfg('unet/config.json'));
  t.deepEqual(demo.controlnet, cfg('controlnet/config.json'));
  t.deepEqual(demo.scheduler, cfg('scheduler/scheduler_config.json'));
});
