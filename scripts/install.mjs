#!/usr/bin/env node
// The package's `install` script.
//
// * In a clone (the package is the project being installed, `npm ci`): builds everything from source as
//   before — the engine addon, the native test runner and benchmark, the captioner addon.
// * As a dependency of an app: a fallback only. When an engine addon already loads — normally the prebuilt
//   one of the platform package (@xpsr-native/linux-x64), installed by npm as an optional dependency — it
//   does nothing. Otherwise it builds the addon from source (CMake + a C++17 compiler; nvcc for CUDA).
//   With install scripts blocked (npm --ignore-scripts, pnpm, bun) this script never runs: the prebuilt
//   package alone is enough, and `npx xpsr build` builds from source on request.
// XPSR_SKIP_NATIVE_BUILD=1 makes it do nothing at all. Downloads nothing.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { buildNative, NativeBuildError } from './build-native.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

function log(msg) {
  process.stderr.write(`[xpsr-native] ${msg}\n`);
}

/** Loads the engine addon in a child process (a broken binary must not take the install down). */
function probeAddon() {
  const native = path.join(root, 'dist', 'lib', 'native.js');
  if (!existsSync(native)) return { ok: false, detail: 'dist/lib/native.js is missing' };
  const script = `const m = await import(${JSON.stringify(pathToFileURL(native).href)});
    const a = m.loadNative(); a.systemInfo();
    const l = await import(${JSON.stringify(pathToFileURL(path.join(root, 'dist', 'lib', 'addon-loader.js')).href)});
    const d = l.loadedAddons().find((x) => x.file.endsWith('xpsr.node'));
    process.stdout.write(d ? d.origin + ': ' + d.file : 'loaded');`;
  const env = { ...process.env };
  delete env.XPSR_NATIVE_ADDON; // the install is about what the package itself provides
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', env, timeout: 60_000 });
  return { ok: r.status === 0, detail: (r.status === 0 ? r.stdout : r.stderr || r.stdout || String(r.error ?? '')).trim() };
}

async function main() {
  if (process.env.XPSR_SKIP_NATIVE_BUILD === '1') {
    log('XPSR_SKIP_NATIVE_BUILD=1: not building native code');
    return;
  }
  const asDependency = root.split(path.sep).includes('node_modules');
  if (!asDependency) {
    await buildNative();
    return;
  }
  const probe = probeAddon();
  if (probe.ok) {
    log(`engine addon loads (${probe.detail}); nothing to build`);
    return;
  }
  log('no engine addon loads for this platform:');
  for (const line of probe.detail.split('\n').slice(0, 12)) log(`  ${line}`);
  log('building it from source (fallback; needs CMake >= 3.18 and a C++17 compiler) ...');
  await buildNative({ addonOnly: true });
}

main().catch((e) => {
  log(e instanceof NativeBuildError ? e.message : `build failed: ${e?.stack ?? e}`);
  log(
    'Prebuilt binaries: npm installs @xpsr-native/linux-x64 automatically on Linux x64 (glibc) unless optional ' +
      'dependencies are omitted; elsewhere build from source (see the README, "Install").',
  );
  process.exit(1);
});
