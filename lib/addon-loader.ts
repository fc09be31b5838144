/**
 * The one loader of the package's native addons (the engine's xpsr.node, the captioner's
 * xpsr_captioner.<variant>.node). Each addon is looked for in an ordered list of places:
 *
 *   1. an environment override (a file path, or a folder holding the file);
 *   2. the package's local build folders (build/Release, build-captioner/Release, ...): a clone, or an app
 *      that built from source (`npx xpsr build`);
 *   3. the prebuilt platform package (`@xpsr-native/linux-x64/<folder>/<file>`), which npm installs as an
 *      optional dependency on the platforms it is published for.
 *
 * The first place that has the file and loads wins. When none does, one XpsrError(ERR_NATIVE_MISSING)
 * lists every place tried with the reason it failed, then what to do. `loadedAddons()` tells which file
 * was loaded from where, with the build-info.json found next to it (`xpsr doctor`).
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { XpsrError } from './errors.js';

/** Root of the installed package (the folder holding package.json); this file is dist/lib/addon-loader.js. */
export const addonPackageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface AddonSpec {
  /** What the addon is, for messages: 'xpsr-native engine addon'. */
  name: string;
  /** File name of the addon: 'xpsr.node'. */
  file: string;
  /** Environment variable holding the full path of an addon file to try first. */
  envFile?: string;
  /** Environment variable holding a folder that contains `file`, tried next. */
  envDir?: string;
  /** Folders relative to the package root, tried in order: ['build/Release', 'build/Debug']. */
  folders: readonly string[];
  /** Prebuilt platform package holding the file (tried last when installed): see platformPackage(). */
  prebuiltPackage?: string;
  /** Folder inside the prebuilt package holding the file ('' or absent: its root). */
  prebuiltFolder?: string;
  /**
   * Checks a found file before it is loaded (e.g. that it was built for the installed dependencies).
   * Returns undefined when it may be loaded, or the reason it may not (reported for that place).
   */
  check?: (file: string) => string | undefined;
  /** What the user can do, one line each ("run `npm run build:native`", ...). */
  remedies: readonly string[];
}

export type AddonOrigin = 'environment' | 'local build' | 'prebuilt package';

/** What was loaded, from where, and what it says it was built with. */
export interface LoadedAddonInfo {
  /** The spec's name ('xpsr-native engine addon'). */
  name: string;
  /** The file that was loaded. */
  file: string;
  origin: AddonOrigin;
  /** The place as listed in errors: the file, `XPSR_NATIVE_ADDON=...`, or `package @xpsr-native/linux-x64@0.1.0`. */
  where: string;
  /** build-info.json next to the file (written by the build and the pack script), when present and readable. */
  buildInfo?: AddonBuildInfo;
}

/** The build-info.json written by scripts/lib/build-info.mjs (only the fields the library reads). */
export interface AddonBuildInfo {
  package?: string | null;
  platform?: string;
  backends?: string[];
  cpuKernels?: string[];
  cuda?: { compiler: string; architectures: string[]; ptx: string[]; cudart: string } | null;
  compiler?: string;
  requires?: { glibc?: string | null; glibcxx?: string | null; libraries?: string[] };
  builtAt?: string;
  git?: string | null;
}

export interface LoadedAddon<T> extends LoadedAddonInfo {
  addon: T;
}

interface Place {
  where: string;
  origin: AddonOrigin;
  file?: string;
  reason?: string;
}

/** Platforms with a published prebuilt package (`@xpsr-native/<platform>`; Linux: glibc only). */
export const PREBUILT_PLATFORMS: readonly string[] = ['linux-x64'];

let musl: boolean | undefined;
function isMusl(): boolean {
  if (process.platform !== 'linux') return false;
  // Node's report names the glibc it runs on; musl builds of Node have none.
  const report = process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined;
  musl ??= !report?.header?.glibcVersionRuntime;
  return musl;
}

/** Name of the prebuilt package for this machine: '@xpsr-native/linux-x64' (glibc), '...-musl' on musl. */
export function platformPackage(): string {
  return `@xpsr-native/${process.platform}-${process.arch}${isMusl() ? '-musl' : ''}`;
}

/** The remedy line about the prebuilt package for this machine. */
export function prebuiltRemedy(): string {
  const pkg = platformPackage();
  return PREBUILT_PLATFORMS.includes(pkg.slice('@xpsr-native/'.length))
    ? `install the prebuilt binaries: npm installs ${pkg} with xpsr-native (an optional dependency) unless optional ` +
        'dependencies are omitted (--omit=optional, --no-optional); or `npm install ' +
        pkg +
        '` with the same version as xpsr-native;'
    : `no prebuilt binaries are published for ${pkg.slice('@xpsr-native/'.length)}: build from source;`;
}

/** One line: "cpu + cuda (sm_80 sm_90, PTX compute_80; CUDA NVIDIA 13.0.88, cudart static); ...; needs glibc >= 2.34". */
export function describeBuildInfo(b: AddonBuildInfo): string {
  const cuda = b.cuda
    ? ` (${b.cuda.architectures.join(' ')}${b.cuda.ptx.length ? `, PTX ${b.cuda.ptx.join(' ')}` : ''}; CUDA ${b.cuda.compiler}, cudart ${b.cuda.cudart})`
    : '';
  const needs = [`glibc >= ${b.requires?.glibc ?? '?'}`];
  if (b.requires?.glibcxx) needs.push(`libstdc++ GLIBCXX_${b.requires.glibcxx}`);
  return (
    `backends ${(b.backends ?? ['?']).join(' + ')}${cuda}; CPU kernels ${b.cpuKernels?.join(', ') || 'unknown'}; ` +
    `compiler ${b.compiler ?? 'unknown'}; needs ${needs.join(', ')}${b.package ? `; ${b.package}` : ''}${b.git ? ` (${b.git.slice(0, 12)})` : ''}`
  );
}

/** Where a loaded addon came from, for people: "prebuilt package @xpsr-native/linux-x64@0.1.0 (/app/...)". */
export function describeOrigin(l: Pick<LoadedAddonInfo, 'origin' | 'where' | 'file'>): string {
  if (l.origin === 'local build') return `local build (${l.file})`;
  if (l.origin === 'prebuilt package') return `prebuilt package ${l.where.replace(/^package /, '')} (${l.file})`;
  return `${l.where} (${l.file})`;
}

function readBuildInfo(file: string): AddonBuildInfo | undefined {
  try {
    return JSON.parse(readFileSync(path.join(path.dirname(file), 'build-info.json'), 'utf8')) as AddonBuildInfo;
  } catch {
    return undefined;
  }
}

function places(spec: AddonSpec, env: NodeJS.ProcessEnv): Place[] {
  const out: Place[] = [];
  if (spec.envFile) {
    const v = env[spec.envFile];
    if (v) out.push({ where: `${spec.envFile}=${v}`, origin: 'environment', file: path.resolve(v) });
  }
  if (spec.envDir) {
    const v = env[spec.envDir];
    if (v) out.push({ where: `${spec.envDir}=${v}`, origin: 'environment', file: path.resolve(v, spec.file) });
  }
  for (const f of spec.folders) {
    const file = path.join(addonPackageRoot, f, spec.file);
    out.push({ where: file, origin: 'local build', file });
  }
  if (spec.prebuiltPackage) {
    const origin = 'prebuilt package';
    try {
      const pkgJson = createRequire(path.join(addonPackageRoot, 'package.json')).resolve(`${spec.prebuiltPackage}/package.json`);
      const { version } = JSON.parse(readFileSync(pkgJson, 'utf8')) as { version?: string };
      out.push({
        where: `package ${spec.prebuiltPackage}@${version}`,
        origin,
        file: path.join(path.dirname(pkgJson), spec.prebuiltFolder ?? '', spec.file),
      });
    } catch {
      const unpublished =
        spec.prebuiltPackage === platformPackage() && !PREBUILT_PLATFORMS.includes(spec.prebuiltPackage.slice('@xpsr-native/'.length));
      out.push({ where: `package ${spec.prebuiltPackage}`, origin, reason: unpublished ? 'not published for this platform' : 'not installed' });
    }
  }
  return out;
}

const loaded = new Map<string, LoadedAddon<unknown>>();

/** Every addon loaded so far in this thread: file, origin and build info (for `xpsr doctor`). */
export function loadedAddons(): LoadedAddonInfo[] {
  return [...loaded.values()].map(({ addon: _addon, ...info }) => info);
}

/**
 * Where `spec` would be loaded from, without loading it: the first place whose file exists and passes the
 * spec's check (for reports about addons that can only be loaded later, such as the captioner's).
 */
export function findAddon(spec: AddonSpec, env: NodeJS.ProcessEnv = process.env): Omit<LoadedAddonInfo, 'buildInfo'> | undefined {
  for (const p of places(spec, env)) {
    if (p.file && existsSync(p.file) && !spec.check?.(p.file)) return { name: spec.name, file: p.file, origin: p.origin, where: p.where };
  }
  return undefined;
}

/** Loads the addon described by `spec` (once per file and environment); throws XpsrError(ERR_NATIVE_MISSING). */
export function loadAddon<T>(spec: AddonSpec, env: NodeJS.ProcessEnv = process.env): LoadedAddon<T> {
  const require = createRequire(import.meta.url);
  const tried: Array<{ where: string; reason: string }> = [];
  for (const p of places(spec, env)) {
    if (!p.file) {
      tried.push({ where: p.where, reason: p.reason ?? 'not available' });
      continue;
    }
    const have = loaded.get(p.file);
    if (have) return have as LoadedAddon<T>;
    if (!existsSync(p.file)) {
      tried.push({ where: p.where, reason: p.where.endsWith(p.file) ? 'not found' : `${p.file} not found` });
      continue;
    }
    const refused = spec.check?.(p.file);
    if (refused) {
      tried.push({ where: p.where, reason: refused });
      continue;
    }
    try {
      const addon = require(p.file) as T;
      const l: LoadedAddon<T> = { addon, name: spec.name, file: p.file, origin: p.origin, where: p.where, buildInfo: readBuildInfo(p.file) };
      loaded.set(p.file, l);
      return l;
    } catch (e) {
      tried.push({ where: p.where, reason: (e as Error).message });
    }
  }
  throw new XpsrError(
    'ERR_NATIVE_MISSING',
    `The ${spec.name} could not be loaded (${process.platform}-${process.arch}, Node ${process.version}). Tried:\n` +
      tried.map((t) => `  - ${t.where}: ${t.reason}`).join('\n') +
      '\nPossible solutions:\n' +
      spec.remedies.map((r) => `  - ${r}`).join('\n'),
    { addon: spec.name, file: spec.file, tried },
  );
}
