#!/usr/bin/env node
// The package's install step: builds the native engine addon (build/Release/xpsr.node) with cmake-js,
// plus the native test runner and benchmark, and then the captioner addon (scripts/build-captioner.mjs).
// Falls back to node-gyp with binding.gyp (CPU backend only) when CMake is missing. Downloads nothing.
//
//   node scripts/build-native.mjs [--force]
// Environment:
//   XPSR_CUDA=auto|on|off     build the CUDA backend when nvcc is found (auto, default), always, never
//   XPSR_BUILD_JOBS=N         parallel compile jobs (default: number of CPUs)
//   XPSR_CAPTIONER=off        skip the captioner addon
//   XPSR_SKIP_NATIVE_BUILD=1  do nothing (packagers with prebuilt binaries)
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cpus } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const force = process.argv.includes('--force');
const jobs = Number(process.env.XPSR_BUILD_JOBS) || Math.max(1, cpus().length);

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

async function main() {
  if (process.env.XPSR_SKIP_NATIVE_BUILD === '1') {
    log('XPSR_SKIP_NATIVE_BUILD=1: not building native code');
    return;
  }
  const addon = path.join(root, 'build', 'Release', 'xpsr.node');
  if (!force && existsSync(addon) && process.env.npm_lifecycle_event !== 'install') {
    log(`engine addon already built: ${path.relative(root, addon)}`);
  } else if (has('cmake')) {
    log(`building the engine addon with cmake-js (${jobs} jobs; CUDA: ${process.env.XPSR_CUDA ?? 'auto'})`);
    const cmakeJs = path.join(root, 'node_modules', 'cmake-js', 'bin', 'cmake-js');
    const args = [cmakeJs, 'compile', '--parallel', String(jobs), '--out', 'build', '--config', 'Release'];
    const r = run(process.execPath, args);
    if (!r.ok) {
      log('the engine build failed (see the compiler output above).');
      log('Requirements: CMake >= 3.18 and a C++17 compiler; set XPSR_CUDA=off to skip the CUDA backend.');
      process.exit(1);
    }
    log(`engine addon built in ${r.seconds.toFixed(0)} s`);
  } else {
    log('CMake not found: building the CPU-only addon with node-gyp (binding.gyp)');
    const npmGyp = path.join(path.dirname(path.dirname(process.execPath)), 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
    const gyp = [path.join(root, 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'), npmGyp].find((p) => existsSync(p));
    const gypBin = gyp ? [process.execPath, [gyp]] : ['node-gyp', []];
    // Build against this Node's own headers (no header download): npm's nodedir, else <prefix>/include/node.
    const prefix = path.dirname(path.dirname(process.execPath));
    const nodedir = process.env.npm_config_nodedir || (existsSync(path.join(prefix, 'include', 'node', 'node_api.h')) ? prefix : '');
    const r = run(gypBin[0], [...gypBin[1], 'rebuild', `-j`, String(jobs), ...(nodedir ? [`--nodedir=${nodedir}`] : [])]);
    if (!r.ok) {
      log('node-gyp build failed. Install CMake (recommended) or a working node-gyp toolchain.');
      process.exit(1);
    }
  }
  if (process.env.XPSR_CAPTIONER === 'off') {
    log('XPSR_CAPTIONER=off: skipping the captioner addon');
    return;
  }
  const capt = path.join(root, 'scripts', 'build-captioner.mjs');
  if (existsSync(capt)) {
    const mod = await import(pathToFileURL(capt).href);
    if (typeof mod.buildCaptioner === 'function') await mod.buildCaptioner({ force });
  }
}

main().catch((e) => {
  log(`build failed: ${e?.stack ?? e}`);
  process.exit(1);
});
