#!/usr/bin/env node
// Builds the captioner addon (native/captioner) against node-llama-cpp's own llama.cpp.
//
//   node scripts/build-captioner.mjs [--force] [--jobs N] [--quiet]
//   import { buildCaptioner } from './build-captioner.mjs'; await buildCaptioner({ force })
//
// 1. extracts tools/mtmd (+ headers, vendor/hash, stb) of the llama.cpp release bundled with the installed
//    node-llama-cpp (node_modules/node-llama-cpp/llama/gitRelease.bundle) into build-captioner/llama.cpp —
//    nothing is vendored in the repository and nothing is downloaded;
// 2. runs cmake-js on native/captioner: mtmd is compiled once, then one addon per installed node-llama-cpp
//    prebuilt variant (cpu, cuda, vulkan) is linked against that variant's libllama/libggml;
// 3. copies the addons to build-captioner/Release/xpsr_captioner.<variant>.node with a manifest.json, and
//    checks that the cpu addon loads next to node-llama-cpp.
// Idempotent: when the manifest's stamp (node-llama-cpp version, llama.cpp commit, addon sources, variants)
// matches, it returns at once. XPSR_CAPTIONER=off skips the build (the LLaVA captioner is then unavailable).
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SRC_DIR = path.join(ROOT, 'native', 'captioner');
const BUILD_DIR = path.join(ROOT, 'build-captioner');
const LLAMA_DIR = path.join(BUILD_DIR, 'llama.cpp');
const CMAKE_OUT = path.join(BUILD_DIR, 'cmake');
const RELEASE_DIR = path.join(BUILD_DIR, 'Release');
const MANIFEST = path.join(RELEASE_DIR, 'manifest.json');
const STAMP_VERSION = 1;
// Subset of llama.cpp that mtmd needs (see docs/captioning.md, "How the addon is built").
const EXTRACT_PATHS = [
  'tools/mtmd',
  'include',
  'ggml/include',
  'src/llama-ext.h',
  'vendor/hash',
  'vendor/stb',
  'vendor/miniaudio',
  'vendor/sheredom',
];

export class CaptionerBuildError extends Error {
  constructor(message, code = 'ERR_CAPTIONER_BUILD') {
    super(message);
    this.name = 'CaptionerBuildError';
    this.code = code;
  }
}

export function captionerDisabled(env = process.env) {
  const v = String(env.XPSR_CAPTIONER ?? '')
    .trim()
    .toLowerCase();
  return v === 'off' || v === '0' || v === 'false' || v === 'disabled';
}

function sha256(data) {
  return createHash('sha256').update(data).digest('hex');
}

function hashTree(dir) {
  const h = createHash('sha256');
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) h.update(path.relative(dir, p)).update('\0').update(fs.readFileSync(p)).update('\0');
    }
  };
  walk(dir);
  return h.digest('hex');
}

/** Node's lookup for `name` from `from` (node_modules of `from` and of its parents), without `exports` rules. */
function findPackageDir(name, from) {
  for (let d = path.resolve(from); ; d = path.dirname(d)) {
    const p = path.join(d, 'node_modules', name);
    if (fs.existsSync(path.join(p, 'package.json'))) return fs.realpathSync(p);
    if (path.dirname(d) === d) return null;
  }
}

/** Where node-llama-cpp and its prebuilt variants are. */
export function locateNodeLlamaCpp() {
  const dir = findPackageDir('node-llama-cpp', ROOT);
  if (!dir) throw new CaptionerBuildError('node-llama-cpp is not installed (run npm ci first)', 'ERR_CAPTIONER_DEPS');
  const pkgJson = path.join(dir, 'package.json');
  const version = JSON.parse(fs.readFileSync(pkgJson, 'utf8')).version;
  const bundle = path.join(dir, 'llama', 'gitRelease.bundle');
  const infoFile = path.join(dir, 'llama', 'llama.cpp.info.json');
  if (!fs.existsSync(bundle) || !fs.existsSync(infoFile)) {
    throw new CaptionerBuildError(
      `node-llama-cpp ${version} has no llama/gitRelease.bundle; cannot build the captioner offline`,
      'ERR_CAPTIONER_DEPS',
    );
  }
  const tag = JSON.parse(fs.readFileSync(infoFile, 'utf8')).tag;
  const base = `${process.platform}-${process.arch}`;
  const variants = [];
  for (const [name, pkg] of [
    ['cpu', base],
    ['cuda', `${base}-cuda`],
    ['vulkan', `${base}-vulkan`],
  ]) {
    const pdir = findPackageDir(`@node-llama-cpp/${pkg}`, dir);
    if (!pdir) continue;
    const bins = path.join(pdir, 'bins', pkg);
    if (!fs.existsSync(bins)) continue;
    const files = fs.readdirSync(bins);
    const llama = files.find((f) => /^libllama\.([a-z0-9]+\.)?v[0-9.]+\.so$/.test(f));
    const ggml = files.find((f) => /^libggml\.([a-z0-9]+\.)?v[0-9.]+\.so$/.test(f));
    if (!llama || !ggml || !files.includes('libggml-base.so')) continue;
    variants.push({ name, pkg, bins, llama, ggml });
  }
  return { dir, version, bundle, tag, addonSrc: path.join(dir, 'llama', 'addon'), variants };
}

function git(args, opts = {}) {
  const r = spawnSync('git', args, { encoding: 'utf8', maxBuffer: 64 << 20, ...opts });
  if (r.error) {
    throw new CaptionerBuildError(
      `git is needed to extract llama.cpp from node-llama-cpp's bundle but could not run: ${r.error.message}`,
      'ERR_CAPTIONER_TOOLS',
    );
  }
  if (r.status !== 0) throw new CaptionerBuildError(`git ${args.join(' ')} failed: ${(r.stderr || '').trim()}`);
  return r.stdout;
}

function bundleCommit(bundle) {
  const out = git(['bundle', 'list-heads', bundle]).trim().split('\n')[0] ?? '';
  const commit = out.split(/\s+/)[0];
  if (!/^[0-9a-f]{40}$/.test(commit)) throw new CaptionerBuildError(`cannot read the head of ${bundle}`);
  return commit;
}

function extractLlamaCpp(nlc, commit, log) {
  const stampFile = path.join(LLAMA_DIR, '.xpsr-extracted');
  if (fs.existsSync(stampFile) && fs.readFileSync(stampFile, 'utf8').trim() === commit) return false;
  const t0 = Date.now();
  log(`extracting llama.cpp ${nlc.tag} (${commit.slice(0, 10)}) mtmd sources from node-llama-cpp's bundle...`);
  const gitDir = path.join(BUILD_DIR, '.bundle-git');
  fs.rmSync(LLAMA_DIR, { recursive: true, force: true });
  fs.rmSync(gitDir, { recursive: true, force: true });
  fs.mkdirSync(LLAMA_DIR, { recursive: true });
  git(['init', '-q', '--bare', gitDir]);
  git(['--git-dir', gitDir, 'fetch', '-q', nlc.bundle, 'HEAD']);
  const fetched = git(['--git-dir', gitDir, 'rev-parse', 'FETCH_HEAD']).trim();
  if (fetched !== commit) throw new CaptionerBuildError(`bundle head ${fetched} != ${commit}`);
  const tar = path.join(BUILD_DIR, 'llama-subset.tar');
  git(['--git-dir', gitDir, 'archive', '-o', tar, commit, ...EXTRACT_PATHS]);
  const r = spawnSync('tar', ['-xf', tar, '-C', LLAMA_DIR], { encoding: 'utf8' });
  if (r.status !== 0) throw new CaptionerBuildError(`tar failed: ${r.stderr || r.error?.message}`, 'ERR_CAPTIONER_TOOLS');
  fs.rmSync(tar, { force: true });
  fs.rmSync(gitDir, { recursive: true, force: true });
  for (const p of ['tools/mtmd/mtmd.h', 'src/llama-ext.h', 'include/llama.h', 'ggml/include/ggml.h']) {
    if (!fs.existsSync(path.join(LLAMA_DIR, p))) {
      throw new CaptionerBuildError(`the bundle of node-llama-cpp ${nlc.version} lacks ${p}; this llama.cpp release is not supported`);
    }
  }
  fs.writeFileSync(stampFile, commit + '\n');
  log(`extracted in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  return true;
}

function run(cmd, args, { cwd, quiet, log }) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], env: process.env });
    let tail = '';
    const onData = (chunk) => {
      const s = chunk.toString();
      tail = (tail + s).slice(-8000);
      if (!quiet) process.stderr.write(s);
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('error', (e) => reject(new CaptionerBuildError(`cannot run ${cmd}: ${e.message}`, 'ERR_CAPTIONER_TOOLS')));
    child.on('close', (code) => {
      if (code === 0) resolve(tail);
      else {
        if (quiet) log(`last output:\n${tail}`);
        reject(new CaptionerBuildError(`${path.basename(args[0] ?? cmd)} ${args[1] ?? ''} failed with exit code ${code}`));
      }
    });
  });
}

function findOnPath(cmd) {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const p = path.join(dir, cmd);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      if (fs.statSync(p).isFile()) return p;
    } catch {
      /* next */
    }
  }
  return null;
}

function verifyCpuAddon(file, nlcDir) {
  // A child process: getLlama() (CPU prebuilt) first, then the addon must resolve every symbol.
  const script = `
    const { getLlama } = await import(${JSON.stringify(path.join(nlcDir, 'dist', 'index.js'))});
    const { createRequire } = await import('node:module');
    const llama = await getLlama({ build: 'never', gpu: false, logLevel: 'error' });
    const addon = createRequire(import.meta.url)(${JSON.stringify(file)});
    const info = addon.buildInfo();
    if (typeof info.mtmdMarker !== 'string') throw new Error('bad buildInfo');
    console.log(JSON.stringify(info));
    await llama.dispose();`;
  // a file, not `node -e`: node-llama-cpp's binary test forks with process.execArgv
  const file2 = path.join(BUILD_DIR, 'verify-addon.mjs');
  fs.writeFileSync(file2, script);
  const r = spawnSync(process.execPath, [file2], { encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) {
    throw new CaptionerBuildError(`the built cpu addon does not load next to node-llama-cpp:\n${(r.stderr || r.stdout || '').trim()}`);
  }
  return JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}');
}

/**
 * Build (or confirm up to date) the captioner addons.
 * @param {{force?: boolean, jobs?: number, quiet?: boolean, log?: (msg: string) => void}} [options]
 * @returns {Promise<{status: 'built'|'up-to-date'|'disabled', variants: string[], dir: string, seconds: number}>}
 */
export async function buildCaptioner(options = {}) {
  const { force = false, quiet = false } = options;
  const log = options.log ?? ((m) => process.stderr.write(`[captioner] ${m}\n`));
  const t0 = Date.now();
  const seconds = () => Math.round((Date.now() - t0) / 100) / 10;
  if (captionerDisabled()) {
    log('XPSR_CAPTIONER=off: skipping the captioner addon (LlavaCaptioner will be unavailable)');
    return { status: 'disabled', variants: [], dir: RELEASE_DIR, seconds: seconds() };
  }
  if (process.platform !== 'linux') {
    throw new CaptionerBuildError(
      `the captioner addon is built on Linux only (this is ${process.platform}); ` +
        'set XPSR_CAPTIONER=off to skip it and use the HTTP or fixed captioners',
      'ERR_CAPTIONER_UNSUPPORTED',
    );
  }
  const nlc = locateNodeLlamaCpp();
  if (nlc.variants.length === 0 || nlc.variants[0].name !== 'cpu') {
    throw new CaptionerBuildError(
      `no prebuilt node-llama-cpp binaries for ${process.platform}-${process.arch} ` +
        `(@node-llama-cpp/${process.platform}-${process.arch}); cannot link the captioner`,
      'ERR_CAPTIONER_DEPS',
    );
  }
  const commit = bundleCommit(nlc.bundle);
  const stamp = sha256(
    JSON.stringify({
      v: STAMP_VERSION,
      nlc: nlc.version,
      commit,
      src: hashTree(SRC_DIR),
      script: sha256(fs.readFileSync(fileURLToPath(import.meta.url))),
      variants: nlc.variants.map((v) => [v.name, v.bins, v.llama, v.ggml]),
      platform: `${process.platform}-${process.arch}`,
    }),
  );
  const outFile = (v) => path.join(RELEASE_DIR, `xpsr_captioner.${v}.node`);
  if (!force && fs.existsSync(MANIFEST)) {
    try {
      const m = JSON.parse(fs.readFileSync(MANIFEST, 'utf8'));
      if (m.stamp === stamp && m.variants.every((v) => fs.existsSync(outFile(v)))) {
        log(`up to date (${m.variants.join(', ')}; node-llama-cpp ${nlc.version}, llama.cpp ${nlc.tag})`);
        return { status: 'up-to-date', variants: m.variants, dir: RELEASE_DIR, seconds: seconds() };
      }
    } catch {
      /* rebuild */
    }
  }
  fs.mkdirSync(BUILD_DIR, { recursive: true });
  if (force) fs.rmSync(CMAKE_OUT, { recursive: true, force: true });
  extractLlamaCpp(nlc, commit, log);

  const jobs = options.jobs ?? Math.max(1, os.availableParallelism?.() ?? os.cpus().length);
  const cmakeJs = createRequire(path.join(ROOT, 'package.json')).resolve('cmake-js/bin/cmake-js');
  const cmake = process.env.CMAKE_PATH || findOnPath('cmake');
  if (!cmake) {
    throw new CaptionerBuildError(
      'CMake >= 3.19 is needed to build the captioner addon (e.g. apt install cmake); ' + 'or set XPSR_CAPTIONER=off',
      'ERR_CAPTIONER_TOOLS',
    );
  }
  const common = ['--directory', SRC_DIR, '--out', CMAKE_OUT, '--config', 'Release', '--cmake-path', cmake];
  const defs = [
    `--CDXPSR_LLAMA_SRC=${LLAMA_DIR}`,
    `--CDXPSR_NLC_ADDON_SRC=${nlc.addonSrc}`,
    `--CDXPSR_VARIANT_NAMES=${nlc.variants.map((v) => v.name).join(';')}`,
    `--CDXPSR_VARIANT_DIRS=${nlc.variants.map((v) => v.bins).join(';')}`,
  ];
  log(`configuring (variants: ${nlc.variants.map((v) => v.name).join(', ')}; node-llama-cpp ${nlc.version}, llama.cpp ${nlc.tag})`);
  await run(process.execPath, [cmakeJs, 'configure', ...common, ...defs, '--log-level', 'warn'], { cwd: ROOT, quiet, log });
  log(`compiling mtmd + addon with ${jobs} job(s); a first build takes ~1.5-5 min on 2 cores...`);
  const tb = Date.now();
  await run(process.execPath, [cmakeJs, 'build', ...common, '--parallel', String(jobs), '--log-level', 'warn'], { cwd: ROOT, quiet, log });
  log(`compiled in ${((Date.now() - tb) / 1000).toFixed(1)} s`);

  fs.mkdirSync(RELEASE_DIR, { recursive: true });
  const built = [];
  for (const v of nlc.variants) {
    const src = path.join(CMAKE_OUT, 'Release', `xpsr_captioner.${v.name}.node`);
    if (!fs.existsSync(src)) throw new CaptionerBuildError(`cmake-js did not produce ${src}`);
    const tmp = outFile(v.name) + '.tmp';
    fs.copyFileSync(src, tmp);
    fs.renameSync(tmp, outFile(v.name));
    built.push(v.name);
  }
  log('checking that the cpu addon loads next to node-llama-cpp...');
  const info = verifyCpuAddon(outFile('cpu'), nlc.dir);
  fs.writeFileSync(
    MANIFEST,
    JSON.stringify(
      {
        stamp,
        variants: built,
        nodeLlamaCpp: nlc.version,
        llamaCpp: { tag: nlc.tag, commit },
        libs: Object.fromEntries(nlc.variants.map((v) => [v.name, { llama: v.llama, ggml: v.ggml, pkg: v.pkg }])),
        buildInfo: info,
        builtAt: new Date().toISOString(),
      },
      null,
      2,
    ) + '\n',
  );
  log(`built ${built.map((v) => `xpsr_captioner.${v}.node`).join(', ')} in ${seconds()} s -> ${path.relative(ROOT, RELEASE_DIR)}/`);
  return { status: 'built', variants: built, dir: RELEASE_DIR, seconds: seconds() };
}

const isMain = process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  const args = process.argv.slice(2);
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write(
      'usage: node scripts/build-captioner.mjs [--force] [--jobs N] [--quiet]\n' +
        '  builds build-captioner/Release/xpsr_captioner.<variant>.node; XPSR_CAPTIONER=off skips\n',
    );
    process.exit(0);
  }
  const ji = args.indexOf('--jobs');
  const jobs = ji >= 0 ? Number(args[ji + 1]) : undefined;
  buildCaptioner({ force: args.includes('--force'), quiet: args.includes('--quiet'), jobs: Number.isFinite(jobs) ? jobs : undefined })
    .then(() => process.exit(0))
    .catch((e) => {
      process.stderr.write(
        `[captioner] build FAILED: ${e.message}\n` + '[captioner] (set XPSR_CAPTIONER=off to install without the in-process LLaVA captioner)\n',
      );
      process.exit(1);
    });
}
