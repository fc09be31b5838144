// The build-info.json written next to an engine addon (build/Release/build-info.json in a local build, the
// root of the @xpsr-native/<platform> package in a prebuilt one). It is read by lib/addon-loader.ts for
// `xpsr doctor`, and everything in it is measured from the binary itself (lib/elf.mjs) or from the CMake
// build that made it, never assumed.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

import { readElf } from './elf.mjs';

export const BUILD_INFO_FILE = 'build-info.json';
export const BUILD_INFO_SCHEMA = 1;

function cmakeCompiler(buildDir, lang) {
  const dir = path.join(buildDir, 'CMakeFiles');
  if (!fs.existsSync(dir)) return null;
  for (const v of fs
    .readdirSync(dir)
    .filter((d) => /^[0-9]/.test(d))
    .sort()
    .reverse()) {
    const f = path.join(dir, v, `CMake${lang}Compiler.cmake`);
    if (!fs.existsSync(f)) continue;
    const text = fs.readFileSync(f, 'utf8');
    const get = (k) => new RegExp(`set\\(CMAKE_${lang}_COMPILER_${k} "([^"]*)"\\)`).exec(text)?.[1];
    const id = get('ID');
    const version = get('VERSION');
    if (id && version) return `${id} ${version}`;
  }
  return null;
}

function gitCommit(root) {
  const r = spawnSync('git', ['-C', root, 'rev-parse', 'HEAD'], { encoding: 'utf8' });
  if (r.status !== 0) return null;
  const dirty = spawnSync('git', ['-C', root, 'status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8' });
  return r.stdout.trim() + (dirty.status === 0 && dirty.stdout.trim() ? '-dirty' : '');
}

/**
 * Describes the engine addon `file`. `buildDir` is the CMake build folder that made it (for the compiler
 * versions; null for node-gyp builds), `root` the package root (its version and git commit), `justBuilt`
 * whether the file was built from the current checkout right now (else the commit is not recorded).
 */
export function describeEngineAddon(file, { buildDir = null, root, builtWith = 'cmake-js', justBuilt = true } = {}) {
  const elf = readElf(file);
  const pkg = root ? JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) : {};
  const bytes = fs.readFileSync(file);
  const cuda =
    elf.cuda && (elf.cuda.sass.length || elf.cuda.ptx.length)
      ? {
          compiler: (buildDir && cmakeCompiler(buildDir, 'CUDA')) ?? 'unknown',
          architectures: elf.cuda.sass,
          ptx: elf.cuda.ptx,
          cudart: elf.needed.some((n) => n.startsWith('libcudart')) ? 'dynamic' : 'static',
        }
      : null;
  return {
    schema: BUILD_INFO_SCHEMA,
    addon: path.basename(file),
    package: pkg.name ? `${pkg.name}@${pkg.version}` : null,
    platform: `${process.platform}-${process.arch}`,
    builtWith,
    backends: cuda ? ['cpu', 'cuda'] : ['cpu'],
    cpuKernels: elf.cpuKernels,
    cuda,
    compiler: (buildDir && cmakeCompiler(buildDir, 'CXX')) ?? elf.comment[0] ?? 'unknown',
    compilerIdent: elf.comment,
    requires: {
      glibc: elf.glibc,
      glibcxx: elf.glibcxx,
      cxxabi: elf.cxxabi,
      libraries: elf.needed,
    },
    bytes: bytes.length,
    sha256: createHash('sha256').update(bytes).digest('hex'),
    // the commit is only known for a build made just now (an older build may come from another commit)
    git: root && justBuilt ? gitCommit(root) : null,
    builtAt: new Date(fs.statSync(file).mtimeMs).toISOString(),
  };
}

/** Writes `info` as build-info.json into `dir`; returns the file written. */
export function writeBuildInfo(dir, info) {
  const out = path.join(dir, BUILD_INFO_FILE);
  fs.writeFileSync(out + '.tmp', JSON.stringify(info, null, 2) + '\n');
  fs.renameSync(out + '.tmp', out);
  return out;
}

/** One line for people: "cpu + cuda (sm_80 sm_90, PTX compute_80; cudart static); GNU 12.2.0; glibc >= 2.34". */
export function summarizeBuildInfo(info) {
  const cuda = info.cuda
    ? ` (${info.cuda.architectures.join(' ')}${info.cuda.ptx.length ? `, PTX ${info.cuda.ptx.join(' ')}` : ''}; CUDA ${info.cuda.compiler}, cudart ${info.cuda.cudart})`
    : '';
  const req = [`glibc >= ${info.requires.glibc ?? '?'}`];
  if (info.requires.glibcxx) req.push(`libstdc++ GLIBCXX_${info.requires.glibcxx}`);
  return `${info.backends.join(' + ')}${cuda}; CPU kernels ${info.cpuKernels.join(', ') || 'unknown'}; compiler ${info.compiler}; needs ${req.join(', ')}`;
}
