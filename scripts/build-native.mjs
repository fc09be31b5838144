#!/usr/bin/env node
// Builds the native engine addon (build/Release/xpsr.node) from source with cmake-js, plus — in a clone —
// the native test runner and benchmark, then the captioner addon (scripts/build-captioner.mjs). Writes
// build/Release/build-info.json next to the addon (what it was built with; read by `xpsr doctor`).
// Falls back to node-gyp with binding.gyp (CPU backend only) when CMake is missing. Downloads nothing.
//
// Run by `npm run build:native` in a clone (and by `npm ci` through scripts/install.mjs), by `npx xpsr build`
// in an app, and by scripts/pack.mjs for release binaries.
//
//   node scripts/build-native.mjs [--force] [--out DIR] [--addon-only] [--no-captioner]
//     --force         rebuild even when the addon exists
//     --out DIR       CMake build folder (default build; the loader looks in build/Release)
//     --addon-only    only the addon target (not the native test runner and benchmark)
//     --no-captioner  skip the captioner addon (as XPSR_CAPTIONER=off)
// Environment:
//   XPSR_CUDA=auto|on|off     build the CUDA backend when nvcc is found (auto, default), always, never
//   XPSR_CUDA_ARCHS=80;90     CUDA architectures (native/cuda/CMakeLists.txt; SASS each + PTX of the lowest)
//   XPSR_BUILD_JOBS=N         parallel compile jobs (default: number of CPUs)
//   XPSR_CAPTIONER=off        skip the captioner addon
//   XPSR_SKIP_NATIVE_BUILD=1  do nothing (packagers with prebuilt binaries)
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { cpus } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { describeEngineAddon, summarizeBuildInfo, writeBuildInfo } from './lib/build-info.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

function log(msg) {
  process.stderr.write(`[xpsr-native] ${msg}\n`);
}

function run(cmd, args, opts = {}) {
  const t0 = Date.now();
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', ...opts });
  return { ok: r.status === 0, seconds: (Date.now() - t0) / 1000, error: r.error };
}

function has(cmd) {
  const r = spawnSync(cmd, ['--version'], { stdio: 'ignore' });
  return r.status === 0;
}

export class NativeBuildError extends Error {}

/**
 * Builds the engine addon (with the native test runner and benchmark unless `addonOnly`) and the captioner
 * addon (unless `captioner` is false). Returns the addon path and its build info. Throws NativeBuildError.
 * `defines` are CMake cache variables for a first configure ({ XPSR_CUDA_ARCHS: '80;86;89;90' }).
 * @param {{force?: boolean, out?: string, addonOnly?: boolean, captioner?: boolean, jobs?: number, defines?: Record<string, string>}} [options]
 */
export async function buildNative(options = {}) {
  const force = options.force ?? false;
  const out = path.resolve(root, options.out ?? 'build');
  const jobs = options.jobs ?? (Number(process.env.XPSR_BUILD_JOBS) || Math.max(1, cpus().length));
  const addon = path.join(out, 'Release', 'xpsr.node');
  let built = false;
  if (!force && existsSync(addon) && process.env.npm_lifecycle_event !== 'install') {
    log(`engine addon already built: ${path.relative(root, addon)}`);
  } else if (has('cmake')) {
    log(
      `building the engine addon with cmake-js in ${path.relative(root, out) || '.'} (${jobs} jobs; ` +
        `CUDA: ${process.env.XPSR_CUDA ?? 'auto'}${process.env.XPSR_CUDA_ARCHS ? `, architectures ${process.env.XPSR_CUDA_ARCHS}` : ''})`,
    );
    // the package's own node_modules in a clone, the app's (hoisted) when installed as a dependency
    const cmakeJsBin = createRequire(path.join(root, 'package.json')).resolve('cmake-js/bin/cmake-js');
    const args = [
      cmakeJsBin,
      'compile',
      '--parallel',
      String(jobs),
      '--out',
      out,
      '--config',
      'Release',
      ...(options.addonOnly ? ['--target', 'xpsr'] : []),
      ...Object.entries(options.defines ?? {}).map(([k, v]) => `--CD${k}=${v}`),
    ];
    const r = run(process.execPath, args);
    if (!r.ok) {
      throw new NativeBuildError(
        'the engine build failed (see the compiler output above). Requirements: CMake >= 3.18 and a ' +
          'C++17 compiler; set XPSR_CUDA=off to skip the CUDA backend.',
      );
    }
    log(`engine addon built in ${r.seconds.toFixed(0)} s`);
    built = true;
  } else {
    if (path.relative(root, out) !== 'build') throw new NativeBuildError('--out needs CMake (node-gyp always builds in build/)');
    log('CMake not found: building the CPU-only addon with node-gyp (binding.gyp)');
    const npmGyp = path.join(
      path.dirname(path.dirname(process.execPath)),
      'lib',
      'node_modules',
      'npm',
      'node_modules',
      'node-gyp',
      'bin',
      'node-gyp.js',
    );
    const gyp = [path.join(root, 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'), npmGyp].find((p) => existsSync(p));
    const gypBin = gyp ? [process.execPath, [gyp]] : ['node-gyp', []];
    // Build against this Node's own headers (no header download): npm's nodedir, else <prefix>/include/node.
    const prefix = path.dirname(path.dirname(process.execPath));
    const nodedir = process.env.npm_config_nodedir || (existsSync(path.join(prefix, 'include', 'node', 'node_api.h')) ? prefix : '');
    const r = run(gypBin[0], [...gypBin[1], 'rebuild', `-j`, String(jobs), ...(nodedir ? [`--nodedir=${nodedir}`] : [])]);
    if (!r.ok) throw new NativeBuildError('node-gyp build failed. Install CMake (recommended) or a working node-gyp toolchain.');
    built = true;
  }
  let info = null;
  if (existsSync(addon) && (built || !existsSync(path.join(out, 'Release', 'build-info.json')))) {
    mkdirSync(path.dirname(addon), { recursive: true });
    info = describeEngineAddon(addon, {
      buildDir: existsSync(path.join(out, 'CMakeCache.txt')) ? out : null,
      root,
      builtWith: existsSync(path.join(out, 'CMakeCache.txt')) ? 'cmake-js' : 'node-gyp',
      justBuilt: built,
    });
    writeBuildInfo(path.dirname(addon), info);
    log(`build info: ${summarizeBuildInfo(info)}`);
  }
  if (options.captioner === false || process.env.XPSR_CAPTIONER === 'off') {
    log('XPSR_CAPTIONER=off: skipping the captioner addon');
    return { addon, info };
  }
  const capt = path.join(root, 'scripts', 'build-captioner.mjs');
  if (existsSync(capt)) {
    const mod = await import(pathToFileURL(capt).href);
    if (typeof mod.buildCaptioner === 'function') await mod.buildCaptioner({ force });
  }
  return { addon, info };
}

const isMain = process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  const args = process.argv.slice(2);
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write('usage: node scripts/build-native.mjs [--force] [--out DIR] [--addon-only] [--no-captioner]\n');
    process.exit(0);
  }
  if (process.env.XPSR_SKIP_NATIVE_BUILD === '1') {
    log('XPSR_SKIP_NATIVE_BUILD=1: not building native code');
    process.exit(0);
  }
  const oi = args.indexOf('--out');
  buildNative({
    force: args.includes('--force'),
    out: oi >= 0 ? args[oi + 1] : undefined,
    addonOnly: args.includes('--addon-only'),
    captioner: !args.includes('--no-captioner'),
  }).catch((e) => {
    log(e instanceof NativeBuildError ? e.message : `build failed: ${e?.stack ?? e}`);
    process.exit(1);
  });
}
