#!/usr/bin/env node
// Builds the npm tarballs of a release into OUTDIR:
//   xpsr-native-<version>.tgz                  the library (JS + types, native sources for from-source
//                                              builds, demo data; no binaries, no test fixtures), its
//                                              optionalDependencies naming the platform package below
//   xpsr-native-linux-x64-<version>.tgz        @xpsr-native/linux-x64: xpsr.node + build-info.json,
//                                              captioner/xpsr_captioner.<variant>.node + manifest.json
// and prints their packed and unpacked sizes and largest files, plus OUTDIR/pack-report.json.
//
//   node scripts/pack.mjs OUTDIR [--reuse-build] [--no-captioner]
//
// Default (a release): compiles the engine addon from scratch in build-release/ with XPSR_CUDA=on and the
// release CUDA architectures (scripts/lib/platforms.mjs: SASS sm_80 sm_86 sm_89 sm_90 + PTX compute_80; a
// long build on 2 cores) and (re)builds the captioner for every node-llama-cpp variant, then checks that the
// binaries have exactly those architectures.
// --reuse-build: packages build/Release/xpsr.node and build-captioner/Release as they are (whatever CUDA
// architectures build/ was compiled with, recorded in build-info.json) — for the CI test of the tarballs.
// Both modes check: no dynamic libcudart, no RUNPATH, GLIBC_/GLIBCXX_ versions within the documented floor,
// the captioner built for the pinned node-llama-cpp, and the size limits.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { buildNative } from './build-native.mjs';
import { describeEngineAddon, summarizeBuildInfo, BUILD_INFO_FILE } from './lib/build-info.mjs';
import { compareVersions, readElf } from './lib/elf.mjs';
import { MAIN_MAX_PACKED_BYTES, PLATFORMS, currentPlatform } from './lib/platforms.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SYSTEM_LIBS =
  /^(libstdc\+\+\.so\.6|libm\.so\.6|libgcc_s\.so\.1|libc\.so\.6|libdl\.so\.2|librt\.so\.1|libpthread\.so\.0|ld-linux-x86-64\.so\.2)$/;

function log(msg) {
  process.stdout.write(`${msg}\n`);
}

class PackError extends Error {}

function mib(n) {
  return `${(n / 1e6).toFixed(2)} MB`;
}

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { cwd: root, encoding: 'utf8', maxBuffer: 1 << 28, ...opts });
  if (r.status !== 0) throw new PackError(`${[cmd, ...args].join(' ')} failed:\n${r.stderr || r.stdout || r.error}`);
  return r.stdout;
}

/** Checks a binary against the platform's rules; returns the ELF facts. */
function checkBinary(file, spec, { allowed }) {
  const elf = readElf(file);
  const rel = path.relative(root, file);
  const problems = [];
  const bad = elf.needed.filter((n) => !SYSTEM_LIBS.test(n) && !(allowed && allowed.test(n)));
  if (bad.length) problems.push(`${rel} needs unexpected shared libraries: ${bad.join(', ')}`);
  if (elf.needed.some((n) => n.startsWith('libcudart'))) problems.push(`${rel} links libcudart dynamically (must be static)`);
  if (elf.runpath) problems.push(`${rel} has a RUNPATH/RPATH (${elf.runpath}); prebuilt binaries must not`);
  if (elf.glibc && compareVersions(elf.glibc, spec.floors.glibc) > 0)
    problems.push(`${rel} needs GLIBC_${elf.glibc}, above the documented floor ${spec.floors.glibc}`);
  if (elf.glibcxx && compareVersions(elf.glibcxx, spec.floors.glibcxx) > 0)
    problems.push(`${rel} needs GLIBCXX_${elf.glibcxx}, above the documented floor ${spec.floors.glibcxx}`);
  if (problems.length) throw new PackError(problems.join('\n'));
  return elf;
}

/** The engine addon to package, built for a release or reused, with its build info. */
async function engineAddon(spec, reuse) {
  if (reuse) {
    const addon = path.join(root, 'build', 'Release', 'xpsr.node');
    if (!fs.existsSync(addon)) throw new PackError('--reuse-build: build/Release/xpsr.node is missing (run npm run build:native)');
    // keep the build's own record (commit, time) when it describes this very file
    let info;
    try {
      info = JSON.parse(fs.readFileSync(path.join(path.dirname(addon), BUILD_INFO_FILE), 'utf8'));
    } catch {
      /* describe it now */
    }
    const fresh = describeEngineAddon(addon, { buildDir: path.join(root, 'build'), root, justBuilt: false });
    if (!info || info.sha256 !== fresh.sha256) info = fresh;
    return { addon, info: { ...info, packaged: 'reused build (scripts/pack.mjs --reuse-build)' } };
  }
  // build-release/ is reused only when it was configured for exactly these architectures (they are fixed
  // at configure time); otherwise it is compiled from scratch.
  const out = path.join(root, 'build-release');
  const archs = spec.cudaArchs.join(';');
  const cache = path.join(out, 'CMakeCache.txt');
  const configured = fs.existsSync(cache) && new RegExp(`^XPSR_CUDA_ARCHS:[A-Z]+=${archs}$`, 'm').test(fs.readFileSync(cache, 'utf8'));
  if (!configured) fs.rmSync(out, { recursive: true, force: true });
  process.env.XPSR_CUDA = 'on';
  const t0 = Date.now();
  const { addon, info } = await buildNative({ out, addonOnly: true, captioner: false, force: true, defines: { XPSR_CUDA_ARCHS: archs } });
  log(`release engine build: ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  const want = spec.cudaArchs.map((a) => `sm_${a}`).join(' ');
  const wantPtx = `compute_${spec.cudaArchs[0]}`;
  if (!info.cuda || info.cuda.architectures.join(' ') !== want || info.cuda.ptx.join(' ') !== wantPtx) {
    throw new PackError(`the release addon has CUDA code ${JSON.stringify(info.cuda)}, expected SASS ${want} + PTX ${wantPtx}`);
  }
  return { addon, info: { ...info, packaged: 'release build (scripts/pack.mjs)' } };
}

/** The captioner addons and manifest to package (or null). */
async function captioner(spec, reuse, pkg) {
  const dir = path.join(root, 'build-captioner', 'Release');
  if (!reuse) {
    const { buildCaptioner } = await import('./build-captioner.mjs');
    await buildCaptioner({});
  }
  const manifestFile = path.join(dir, 'manifest.json');
  if (!fs.existsSync(manifestFile)) {
    if (!reuse) throw new PackError('the captioner build produced no manifest');
    log('note: build-captioner/Release has no captioner build; the platform package will not have the captioner');
    return null;
  }
  const manifest = JSON.parse(fs.readFileSync(manifestFile, 'utf8'));
  const pinned = pkg.dependencies['node-llama-cpp'];
  if (manifest.nodeLlamaCpp !== pinned) {
    throw new PackError(`the captioner was built for node-llama-cpp ${manifest.nodeLlamaCpp}, but package.json pins ${pinned}; rebuild it`);
  }
  const missing = spec.captionerVariants.filter((v) => !manifest.variants.includes(v));
  if (missing.length && !reuse) {
    throw new PackError(`the release captioner lacks the ${missing.join(', ')} variant(s): install node-llama-cpp's prebuilt packages for them`);
  }
  const files = manifest.variants.map((v) => path.join(dir, `xpsr_captioner.${v}.node`));
  for (const f of files) {
    if (!fs.existsSync(f)) throw new PackError(`${f} is missing`);
    checkBinary(f, spec, { allowed: /^lib(llama|ggml)[.-]/ });
  }
  return { manifestFile, manifest, files };
}

function copy(src, dst) {
  fs.mkdirSync(path.dirname(dst), { recursive: true });
  fs.copyFileSync(src, dst);
}

/** npm pack of a staged folder; returns npm's JSON record (size, unpackedSize, files, filename). */
function npmPack(dir, outDir) {
  const out = run('npm', ['pack', dir, '--json', '--ignore-scripts', '--pack-destination', outDir], { cwd: outDir });
  const rec = JSON.parse(out)[0];
  return { ...rec, file: path.join(outDir, rec.filename) };
}

function report(label, rec, limit) {
  log(`\n${label}: ${path.basename(rec.file)}`);
  log(`  packed ${mib(rec.size)}, unpacked ${mib(rec.unpackedSize)}, ${rec.entryCount} files (limit ${mib(limit)} packed)`);
  log('  largest files:');
  for (const f of [...rec.files].sort((a, b) => b.size - a.size).slice(0, 8)) log(`    ${mib(f.size).padStart(11)}  ${f.path}`);
  if (rec.size > limit) throw new PackError(`${path.basename(rec.file)} is ${mib(rec.size)} packed, over the ${mib(limit)} limit`);
}

async function main() {
  const args = process.argv.slice(2);
  const outArg = args.find((a) => !a.startsWith('--'));
  if (!outArg || args.includes('--help')) {
    log('usage: node scripts/pack.mjs OUTDIR [--reuse-build] [--no-captioner]');
    process.exit(outArg ? 0 : 2);
  }
  const reuse = args.includes('--reuse-build');
  const outDir = path.resolve(outArg);
  const platform = currentPlatform();
  const spec = PLATFORMS[platform];
  if (!spec) throw new PackError(`no platform package is defined for ${platform} (scripts/lib/platforms.mjs)`);
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
  const stage = path.join(outDir, 'stage');
  fs.rmSync(stage, { recursive: true, force: true });
  fs.mkdirSync(stage, { recursive: true });

  // 1. TypeScript -> a clean dist/ (what the main package ships; no leftovers of deleted sources)
  fs.rmSync(path.join(root, 'dist'), { recursive: true, force: true });
  run(process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json']);

  // 2. the platform package
  const { addon, info } = await engineAddon(spec, reuse);
  checkBinary(addon, spec, {});
  const capt = args.includes('--no-captioner') ? null : await captioner(spec, reuse, pkg);
  const platDir = path.join(stage, 'platform');
  const template = JSON.parse(fs.readFileSync(path.join(root, spec.dir, 'package.json'), 'utf8'));
  const platPkg = { ...template, version: pkg.version };
  if (platPkg.scripts) throw new PackError(`${spec.dir}/package.json must have no scripts`);
  fs.mkdirSync(platDir, { recursive: true });
  fs.writeFileSync(path.join(platDir, 'package.json'), JSON.stringify(platPkg, null, 2) + '\n');
  copy(path.join(root, spec.dir, 'README.md'), path.join(platDir, 'README.md'));
  copy(addon, path.join(platDir, 'xpsr.node'));
  const platInfo = { ...info, package: `${platPkg.name}@${platPkg.version}`, libc: 'glibc', floors: spec.floors };
  fs.writeFileSync(path.join(platDir, BUILD_INFO_FILE), JSON.stringify(platInfo, null, 2) + '\n');
  if (capt) {
    for (const f of capt.files) copy(f, path.join(platDir, 'captioner', path.basename(f)));
    copy(capt.manifestFile, path.join(platDir, 'captioner', 'manifest.json'));
  }

  // 3. the main package: npm's own file list (package.json "files") copied to a stage, whose package.json
  //    names the platform packages as exact optional dependencies and keeps only the install script. (The
  //    repository's package.json cannot name them: `npm ci` in a clone would need them published first.)
  const list = JSON.parse(run('npm', ['pack', '--dry-run', '--json', '--ignore-scripts']))[0].files.map((f) => f.path);
  const mainDir = path.join(stage, 'main');
  for (const f of list) if (f !== 'package.json') copy(path.join(root, f), path.join(mainDir, f));
  const fixtures = list.filter((f) => f.startsWith('test/') || /\.safetensors$|\.node$/.test(f));
  if (fixtures.length) throw new PackError(`the main package would ship test fixtures or binaries: ${fixtures.slice(0, 5).join(', ')}`);
  // every defined platform package, each pinned to this exact version (all must be published with it)
  const platformDeps = Object.fromEntries(
    Object.values(PLATFORMS).map((p) => [JSON.parse(fs.readFileSync(path.join(root, p.dir, 'package.json'), 'utf8')).name, pkg.version]),
  );
  const mainPkg = { ...pkg, scripts: { install: pkg.scripts.install }, optionalDependencies: { ...pkg.optionalDependencies, ...platformDeps } };
  delete mainPkg.devDependencies;
  delete mainPkg.ava;
  fs.writeFileSync(path.join(mainDir, 'package.json'), JSON.stringify(mainPkg, null, 2) + '\n');

  // 4. pack, report, record
  fs.mkdirSync(outDir, { recursive: true });
  const platRec = npmPack(platDir, outDir);
  const mainRec = npmPack(mainDir, outDir);
  log(`engine addon: ${summarizeBuildInfo(platInfo)}`);
  if (capt)
    log(
      `captioner: variants ${capt.manifest.variants.join(', ')} for node-llama-cpp ${capt.manifest.nodeLlamaCpp} (llama.cpp ${capt.manifest.llamaCpp.tag})`,
    );
  report(`platform package ${platPkg.name}@${platPkg.version}`, platRec, spec.maxPackedBytes);
  report(`main package ${pkg.name}@${pkg.version}`, mainRec, MAIN_MAX_PACKED_BYTES);
  const rec = (r) => ({ file: r.file, packed: r.size, unpacked: r.unpackedSize, files: r.entryCount });
  fs.writeFileSync(
    path.join(outDir, 'pack-report.json'),
    JSON.stringify(
      {
        version: pkg.version,
        platform,
        reusedBuild: reuse,
        main: rec(mainRec),
        platformPackage: { name: platPkg.name, ...rec(platRec) },
        buildInfo: platInfo,
        captioner: capt ? { variants: capt.manifest.variants, nodeLlamaCpp: capt.manifest.nodeLlamaCpp } : null,
      },
      null,
      2,
    ) + '\n',
  );
  fs.rmSync(stage, { recursive: true, force: true });
  log(`\npack: OK -> ${outDir}`);
}

main().catch((e) => {
  process.stderr.write(`pack: FAILED: ${e instanceof PackError ? e.message : (e?.stack ?? e)}\n`);
  process.exit(1);
});
