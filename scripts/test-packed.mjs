#!/usr/bin/env node
// The test of the npm tarballs as users get them (run by .ci/run after `npm test`):
//
//  1. packs both tarballs (scripts/pack.mjs --reuse-build: the build/ that `npm ci` made, no recompiling);
//  2. installs them into a fresh temporary app with `npm install --ignore-scripts`, under a PATH that holds
//     only node, npm, npx and sh — no compiler, CMake, make, ninja or nvcc (checked) — and no other
//     downloads than the npm registry's packages;
//  3. checks what was installed (no build/ and no test fixtures in xpsr-native, the platform package with
//     its os/cpu/libc fields and no scripts, the exact optional-dependency pin) and the binaries (no dynamic
//     libcudart, highest GLIBC_/GLIBCXX_ versions within the documented floor, cross-checked with binutils
//     when present, build-info.json describing the very file);
//  4. `import { XPSR } from 'xpsr-native'` runs the tiny test model end to end and matches the local build;
//     `npx xpsr doctor` reports the prebuilt addon; `npx xpsr demo` runs; `npm rebuild xpsr-native` (the
//     install script) builds nothing; the prebuilt captioner loads next to node-llama-cpp; without the
//     platform package the install script falls back to building from source and doctor explains;
//  5. a TypeScript consumer type-checks against the shipped types (ESM; node16 and bundler resolution).
//
// Prints one line per check and "test-packed: N passed, M failed"; exit 1 on any failure.
//   node scripts/test-packed.mjs [--tarballs DIR] [--keep]
//     --tarballs DIR  use the tarballs (and pack-report.json) of an earlier `node scripts/pack.mjs DIR`
//     --keep          keep the temporary folder
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { compareVersions, readElf } from './lib/elf.mjs';
import { MAIN_MAX_PACKED_BYTES, PLATFORMS, currentPlatform } from './lib/platforms.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const keep = args.includes('--keep');
const ti = args.indexOf('--tarballs');
const results = [];
const t0 = Date.now();

function check(name, ok, detail = '') {
  results.push({ name, ok: Boolean(ok) });
  process.stdout.write(`${ok ? 'PASS' : 'FAIL'}  ${name}${detail ? `  (${detail})` : ''}\n`);
  return Boolean(ok);
}

function run(cmd, cmdArgs, opts = {}) {
  const t = Date.now();
  const r = spawnSync(cmd, cmdArgs, { encoding: 'utf8', maxBuffer: 1 << 28, timeout: 15 * 60_000, ...opts });
  return { status: r.status, out: `${r.stdout ?? ''}${r.stderr ?? ''}`, stdout: r.stdout ?? '', error: r.error, seconds: (Date.now() - t) / 1000 };
}

function tail(s, n = 25) {
  return s
    .trim()
    .split('\n')
    .slice(-n)
    .map((l) => `      ${l}`)
    .join('\n');
}

function which(cmd, env) {
  const r = spawnSync('/bin/sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8', env });
  return r.status === 0 ? r.stdout.trim() : null;
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xpsr-packed-'));
const app = path.join(tmp, 'app');
let failedEarly = false;

async function main() {
  const platform = currentPlatform();
  const spec = PLATFORMS[platform];
  if (!check(`a platform package is defined for ${platform}`, spec)) return;
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));

  // ---- 1. the tarballs
  const tarDir = ti >= 0 ? path.resolve(args[ti + 1]) : path.join(tmp, 'tarballs');
  if (ti < 0) {
    const r = run(process.execPath, [path.join(root, 'scripts', 'pack.mjs'), tarDir, '--reuse-build'], { cwd: root });
    process.stdout.write(
      r.out
        .split('\n')
        .filter((l) => /packed|^\s+[0-9.]+ MiB|engine addon:|captioner:/.test(l))
        .map((l) => `      ${l}`)
        .join('\n') + '\n',
    );
    if (!check('scripts/pack.mjs --reuse-build packs both tarballs', r.status === 0, `${r.seconds.toFixed(0)} s`)) {
      process.stdout.write(tail(r.out) + '\n');
      return;
    }
  }
  const report = JSON.parse(fs.readFileSync(path.join(tarDir, 'pack-report.json'), 'utf8'));
  check(
    'main package is under 3 MB packed',
    report.main.packed < MAIN_MAX_PACKED_BYTES,
    `${(report.main.packed / 1e6).toFixed(2)} MB packed, ${(report.main.unpacked / 1e6).toFixed(2)} MB unpacked`,
  );
  check(
    'platform package is under 100 MB packed',
    report.platformPackage.packed < spec.maxPackedBytes,
    `${(report.platformPackage.packed / 1e6).toFixed(2)} MB packed, ${(report.platformPackage.unpacked / 1e6).toFixed(2)} MB unpacked`,
  );

  // ---- 2. a PATH without build tools
  const bin = path.join(tmp, 'bin');
  fs.mkdirSync(bin);
  const npmCli = fs.realpathSync(which('npm', process.env) ?? path.join(path.dirname(process.execPath), 'npm'));
  fs.symlinkSync(process.execPath, path.join(bin, 'node'));
  fs.symlinkSync(npmCli, path.join(bin, 'npm'));
  fs.symlinkSync(path.join(path.dirname(npmCli), 'npx-cli.js'), path.join(bin, 'npx'));
  fs.symlinkSync('/bin/sh', path.join(bin, 'sh'));
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(npm_|XPSR_|CC$|CXX$|CUDACXX$|CMAKE|CUDA_|NODE_OPTIONS$)/.test(k) && !/^npm_config_(cache|registry)$/.test(k)) continue;
    env[k] = v;
  }
  env.PATH = bin;
  const tools = ['cc', 'gcc', 'g++', 'c++', 'clang', 'clang++', 'cmake', 'make', 'ninja', 'nvcc', 'ld', 'node-gyp'];
  const visible = tools.filter((t) => which(t, env));
  check(
    'the install PATH hides every compiler, CMake, make, ninja and nvcc',
    visible.length === 0 && which('node', env) && which('npm', env),
    visible.length ? `visible: ${visible.join(', ')}` : `PATH=${bin}: node, npm, npx, sh only`,
  );

  // ---- 3. install into a fresh app
  fs.mkdirSync(app);
  fs.writeFileSync(
    path.join(app, 'package.json'),
    JSON.stringify({ name: 'xpsr-packed-test-app', version: '1.0.0', private: true, type: 'module' }, null, 2),
  );
  const install = run(
    'npm',
    [
      'install',
      '--ignore-scripts',
      '--no-audit',
      '--no-fund',
      '--prefer-offline',
      '--loglevel=error',
      report.main.file,
      report.platformPackage.file,
      `typescript@${pkg.devDependencies.typescript}`,
      `@types/node@${pkg.devDependencies['@types/node']}`,
    ],
    { cwd: app, env },
  );
  if (
    !check(
      'npm install --ignore-scripts of both tarballs (+ typescript, @types/node) in a fresh app',
      install.status === 0,
      `${install.seconds.toFixed(0)} s`,
    )
  ) {
    process.stdout.write(tail(install.out) + '\n');
    failedEarly = true;
    return;
  }
  const main = path.join(app, 'node_modules', 'xpsr-native');
  const plat = path.join(app, 'node_modules', ...report.platformPackage.name.split('/'));
  const mainPkg = JSON.parse(fs.readFileSync(path.join(main, 'package.json'), 'utf8'));
  const platPkg = JSON.parse(fs.readFileSync(path.join(plat, 'package.json'), 'utf8'));
  check(
    'xpsr-native pins the platform package as an exact optional dependency',
    mainPkg.optionalDependencies?.[platPkg.name] === pkg.version && platPkg.version === pkg.version,
    `${platPkg.name}: ${mainPkg.optionalDependencies?.[platPkg.name]}`,
  );
  check(
    'the platform package has os/cpu/libc fields and no scripts',
    platPkg.os?.includes(process.platform) && platPkg.cpu?.includes(process.arch) && platPkg.libc?.includes('glibc') && !platPkg.scripts,
    `os ${platPkg.os}, cpu ${platPkg.cpu}, libc ${platPkg.libc}`,
  );
  const shipped = (dir) => (fs.existsSync(dir) ? fs.readdirSync(dir, { recursive: true }) : []);
  check(
    'xpsr-native ships no test fixtures and no binaries; nothing was built at install',
    !fs.existsSync(path.join(main, 'test')) &&
      !fs.existsSync(path.join(main, 'build')) &&
      !fs.existsSync(path.join(main, 'build-captioner')) &&
      !shipped(main).some((f) => /\.(node|safetensors)$/.test(f)),
  );

  // ---- 4. the binaries
  const addon = path.join(plat, 'xpsr.node');
  const elf = readElf(addon);
  const info = JSON.parse(fs.readFileSync(path.join(plat, 'build-info.json'), 'utf8'));
  check(
    'xpsr.node does not link libcudart dynamically (only the NVIDIA driver is needed) and has no RUNPATH',
    !elf.needed.some((n) => /cudart|libcuda\.so/.test(n)) && !elf.runpath,
    `NEEDED: ${elf.needed.join(' ')}`,
  );
  check(
    `xpsr.node needs at most GLIBC_${spec.floors.glibc} and GLIBCXX_${spec.floors.glibcxx} (the documented floor)`,
    compareVersions(elf.glibc, spec.floors.glibc) <= 0 && (!elf.glibcxx || compareVersions(elf.glibcxx, spec.floors.glibcxx) <= 0),
    `highest GLIBC_${elf.glibc}, GLIBCXX_${elf.glibcxx}, CXXABI_${elf.cxxabi}`,
  );
  const objdump = which('objdump', process.env);
  if (objdump) {
    const r = run(objdump, ['-T', addon]);
    const vers = [...new Set(r.stdout.match(/GLIBC_[0-9.]+/g) ?? [])].map((v) => v.slice(6)).sort(compareVersions);
    check('objdump -T agrees on the highest GLIBC_ version', vers.pop() === elf.glibc, `objdump: ${vers.length ? 'GLIBC_' : ''}${elf.glibc}`);
  } else {
    process.stdout.write('note  objdump not installed: the GLIBC_ cross-check with binutils is skipped\n');
  }
  const sha = createHash('sha256').update(fs.readFileSync(addon)).digest('hex');
  check(
    'build-info.json describes this very xpsr.node (sha256, glibc, CUDA code)',
    info.sha256 === sha &&
      info.requires.glibc === elf.glibc &&
      JSON.stringify(info.cuda?.architectures ?? []) === JSON.stringify(elf.cuda?.sass ?? []) &&
      JSON.stringify(info.cuda?.ptx ?? []) === JSON.stringify(elf.cuda?.ptx ?? []),
    info.cuda ? `CUDA ${info.cuda.architectures.join(' ')} + PTX ${info.cuda.ptx.join(' ')}, cudart ${info.cuda.cudart}` : 'CPU only',
  );
  if (!report.reusedBuild) {
    check(
      'release build: SASS for every release architecture + PTX',
      JSON.stringify(elf.cuda?.sass) === JSON.stringify(spec.cudaArchs.map((a) => `sm_${a}`)) &&
        JSON.stringify(elf.cuda?.ptx) === JSON.stringify([`compute_${spec.cudaArchs[0]}`]),
    );
  }
  const captDir = path.join(plat, 'captioner');
  if (report.captioner) {
    const bad = report.captioner.variants
      .map((v) => ({ v, e: readElf(path.join(captDir, `xpsr_captioner.${v}.node`)) }))
      .filter(
        ({ e }) => e.runpath || compareVersions(e.glibc, spec.floors.glibc) > 0 || (e.glibcxx && compareVersions(e.glibcxx, spec.floors.glibcxx) > 0),
      );
    check('captioner addons: no RUNPATH, within the glibc floor', bad.length === 0, `variants ${report.captioner.variants.join(', ')}`);
  }

  // ---- 5. the library as an app uses it
  const model = path.join(root, 'test', 'fixtures', 'model');
  const image = path.join(root, 'test', 'fixtures', 'images', 'coffee_64x48.png');
  const appScript = `import { XPSR } from 'xpsr-native';
    import { createHash } from 'node:crypto';
    const xpsr = await XPSR.load({ model: ${JSON.stringify(model)}, device: 'cpu', onNotice: () => {} });
    const r = await xpsr.upscale(${JSON.stringify(image)}, { steps: 2, seed: 7, processSize: 64, prompts: { high: 'a cup of coffee', low: 'blurry' } });
    await xpsr.dispose();
    console.log(JSON.stringify({ width: r.width, height: r.height, channels: r.channels, sha: createHash('sha256').update(r.image).digest('hex') }));`;
  fs.writeFileSync(path.join(app, 'run.mjs'), appScript);
  const e2e = run('node', ['run.mjs'], { cwd: app, env });
  let got = null;
  try {
    got = JSON.parse(e2e.stdout.trim().split('\n').pop());
  } catch {
    /* reported below */
  }
  if (
    !check(
      "import { XPSR } from 'xpsr-native' runs the tiny model end to end",
      e2e.status === 0 && got?.width === 256 && got?.height === 192,
      got ? `${got.width}x${got.height}, ${e2e.seconds.toFixed(1)} s` : 'no result',
    )
  )
    process.stdout.write(tail(e2e.out) + '\n');
  // the same run on the clone's own build (dist/ + build/Release): the prebuilt addon must give the same pixels
  fs.writeFileSync(
    path.join(tmp, 'local.mjs'),
    appScript.replace("from 'xpsr-native'", `from ${JSON.stringify(pathToFileURL(path.join(root, 'dist', 'lib', 'index.js')).href)}`),
  );
  const local = run(process.execPath, [path.join(tmp, 'local.mjs')], { cwd: root, env: { ...process.env, XPSR_NATIVE_ADDON: '' } });
  let want = null;
  try {
    want = JSON.parse(local.stdout.trim().split('\n').pop());
  } catch {
    /* reported below */
  }
  check(
    "its output is identical to the local build's",
    got && want && got.sha === want.sha,
    want ? `sha256 ${want.sha.slice(0, 16)}` : tail(local.out, 5),
  );

  const doctor = run('npx', ['xpsr', 'doctor'], { cwd: app, env });
  const esc = (s) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  const prebuiltLine = new RegExp(`engine addon: OK, prebuilt package ${esc(platPkg.name)}@${esc(pkg.version)} \\(${esc(addon)}\\)`);
  if (
    !check(
      'npx xpsr doctor reports the prebuilt addon, where it is and what it was built with',
      doctor.status === 0 &&
        prebuiltLine.test(doctor.stdout) &&
        /built with: backends cpu/.test(doctor.stdout) &&
        doctor.stdout.includes(`glibc >= ${elf.glibc}`) &&
        (!report.captioner || doctor.stdout.includes(`captioner addon: prebuilt package ${platPkg.name}@${pkg.version} (${captDir})`)),
      (doctor.stdout.match(/^(engine addon|built with).*$/gm) ?? []).join(' | '),
    )
  )
    process.stdout.write(tail(doctor.out) + '\n');

  const demoOut = path.join(app, 'demo.png');
  const demo = run('npx', ['xpsr', 'demo', '--device', 'cpu', '--steps', '2', '-o', demoOut], { cwd: app, env });
  if (
    !check(
      'npx xpsr demo runs without test fixtures (synthetic tiny model)',
      demo.status === 0 && fs.existsSync(demoOut) && /demo: OK/.test(demo.stdout),
      `${demo.seconds.toFixed(1)} s`,
    )
  )
    process.stdout.write(tail(demo.out) + '\n');

  const rebuild = run('npm', ['rebuild', 'xpsr-native', '--foreground-scripts'], { cwd: app, env });
  if (
    !check(
      'the install script (npm rebuild xpsr-native) builds nothing when the prebuilt addon loads',
      rebuild.status === 0 && /nothing to build/.test(rebuild.out) && !fs.existsSync(path.join(main, 'build')),
      (rebuild.out.match(/engine addon loads.*$/m) ?? [''])[0].trim(),
    )
  )
    process.stdout.write(tail(rebuild.out) + '\n');

  if (report.captioner) {
    const captScript = `import { getLlama } from 'node-llama-cpp';
      const native = await import(${JSON.stringify(pathToFileURL(path.join(main, 'dist', 'lib', 'captioners', 'native.js')).href)});
      const loader = await import(${JSON.stringify(pathToFileURL(path.join(main, 'dist', 'lib', 'addon-loader.js')).href)});
      const llama = await getLlama({ build: 'never', gpu: false, logLevel: 'error' });
      const addon = native.loadCaptionerAddon(native.detectVariant(llama));
      const info = addon.buildInfo();
      const l = loader.loadedAddons().find((a) => a.file.includes('xpsr_captioner'));
      console.log(JSON.stringify({ marker: info.mtmdMarker, origin: l.origin, file: l.file }));
      await llama.dispose();`;
    fs.writeFileSync(path.join(app, 'captioner.mjs'), captScript);
    const c = run('node', ['captioner.mjs'], { cwd: app, env });
    let ci = null;
    try {
      ci = JSON.parse(c.stdout.trim().split('\n').pop());
    } catch {
      /* reported below */
    }
    if (
      !check(
        "the prebuilt captioner (cpu) loads next to the app's node-llama-cpp",
        c.status === 0 && ci?.origin === 'prebuilt package' && typeof ci.marker === 'string' && ci.file.startsWith(captDir),
        ci ? `${ci.origin}: ${ci.file}` : '',
      )
    )
      process.stdout.write(tail(c.out) + '\n');
  }

  // without the platform package (unsupported platform, optional dependencies omitted): the install script
  // falls back to a source build, which fails here (no compiler) with the ways to get binaries; doctor and
  // the library explain the same
  const aside = `${plat}.aside`;
  fs.renameSync(plat, aside);
  try {
    const rb = run('npm', ['rebuild', 'xpsr-native', '--foreground-scripts'], { cwd: app, env });
    if (
      !check(
        'without the platform package the install script falls back to a source build; with no compiler it fails saying how to get binaries',
        rb.status !== 0 &&
          /building it from source \(fallback/.test(rb.out) &&
          rb.out.includes(`${platPkg.name}: not installed`) &&
          /Prebuilt binaries: npm installs/.test(rb.out),
      )
    )
      process.stdout.write(tail(rb.out) + '\n');
    const d = run('npx', ['xpsr', 'doctor'], { cwd: app, env });
    if (
      !check(
        '... and xpsr doctor says NOT LOADED, lists every place tried and how to get an addon',
        d.status === 1 &&
          /engine addon: NOT LOADED/.test(d.stdout) &&
          d.stdout.includes(`package ${platPkg.name}: not installed`) &&
          /--omit=optional/.test(d.stdout) &&
          /npx xpsr build/.test(d.stdout),
      )
    )
      process.stdout.write(tail(d.out) + '\n');
  } finally {
    fs.rmSync(path.join(main, 'build'), { recursive: true, force: true });
    fs.renameSync(aside, plat);
  }

  // ---- 6. TypeScript consumers
  fs.writeFileSync(
    path.join(app, 'consumer.ts'),
    `import { XPSR, XpsrError, Engine, type UpscaleOptions, type UpscaleResult } from 'xpsr-native';

export async function upscaleOne(file: string): Promise<UpscaleResult> {
  const options: UpscaleOptions = { steps: 20, seed: 1, scheduler: 'ddpm' };
  const xpsr = await XPSR.load({ sd: '/models/sd15', xpsr: '/models/xpsr', device: 'auto' });
  try {
    return await xpsr.upscale(file, options);
  } catch (e) {
    if (e instanceof XpsrError) console.error(e.code);
    throw e;
  } finally {
    await xpsr.dispose();
  }
}
export const engine: Promise<Engine> = Engine.create({ device: 'cpu' });
// the types are real, not any: a wrong option must be an error
// @ts-expect-error device is a string
export const wrong = XPSR.load({ model: '/m', device: 42 });
`,
  );
  // skipLibCheck off, so the shipped .d.ts files are checked too; errors inside other packages' .d.ts
  // (node-llama-cpp's own declarations have some) are reported as notes, not failures.
  for (const resolution of ['node16', 'bundler']) {
    const cfg = `tsconfig.${resolution}.json`;
    fs.writeFileSync(
      path.join(app, cfg),
      JSON.stringify(
        {
          compilerOptions: {
            target: 'ES2022',
            module: resolution === 'node16' ? 'node16' : 'esnext',
            moduleResolution: resolution,
            strict: true,
            noEmit: true,
            skipLibCheck: false,
            types: ['node'],
            lib: ['ES2022'],
          },
          files: ['consumer.ts'],
        },
        null,
        2,
      ),
    );
    const r = run('npx', ['tsc', '-p', cfg], { cwd: app, env });
    const errors = r.stdout.split('\n').filter((l) => /^\S.*\(\d+,\d+\): error TS/.test(l));
    const ours = errors.filter((l) => /^(consumer\.ts|node_modules\/(xpsr-native|@xpsr-native)\/)/.test(l));
    const others = [...new Set(errors.filter((l) => !ours.includes(l)).map((l) => l.split('/')[1]))];
    const ok = r.status === 0 || (errors.length > 0 && ours.length === 0);
    if (
      !check(
        `tsc --noEmit: an ESM TypeScript consumer with moduleResolution ${resolution} (shipped .d.ts checked)`,
        ok,
        `${r.seconds.toFixed(1)} s${others.length ? `; note: ${errors.length - ours.length} error(s) inside ${others.join(', ')}'s own .d.ts, not ours` : ''}`,
      )
    )
      process.stdout.write(tail(ours.length ? ours.join('\n') : r.out) + '\n');
  }
}

main()
  .catch((e) => check('test-packed ran to the end', false, e?.stack ?? String(e)))
  .finally(() => {
    const failed = results.filter((r) => !r.ok).length;
    if (failedEarly || failed || keep) process.stdout.write(`temporary folder kept: ${tmp}\n`);
    else fs.rmSync(tmp, { recursive: true, force: true });
    process.stdout.write(`\ntest-packed: ${results.length - failed} passed, ${failed} failed (${((Date.now() - t0) / 1000).toFixed(0)} s)\n`);
    process.exitCode = failed ? 1 : 0;
  });
