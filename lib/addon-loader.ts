/**
 * The one loader of the package's native addons (the engine's xpsr.node, the captioner's
 * xpsr_captioner.<variant>.node). Each addon is looked for in an ordered list of places:
 *
 *   1. an environment override (a file path, or a folder holding the file);
 *   2. the package's local build folders (build/Release, build-captioner/Release, ...);
 *   3. a prebuilt platform package (`<package>/<file>`), once such packages are published.
 *
 * The first place that has the file and loads wins. When none does, one XpsrError(ERR_NATIVE_MISSING)
 * lists every place tried with the reason it failed, then what to do.
 */
import { existsSync } from 'node:fs';
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
  /** Prebuilt platform package holding `file` at its root (tried last when installed). */
  prebuiltPackage?: string;
  /**
   * Checks a found file before it is loaded (e.g. that it was built for the installed dependencies).
   * Returns undefined when it may be loaded, or the reason it may not (reported for that place).
   */
  check?: (file: string) => string | undefined;
  /** What the user can do, one line each ("run `npm run build:native`", ...). */
  remedies: readonly string[];
}

export interface LoadedAddon<T> {
  addon: T;
  /** The file that was loaded. */
  file: string;
}

interface Place {
  where: string;
  file?: string;
  reason?: string;
}

function places(spec: AddonSpec, env: NodeJS.ProcessEnv): Place[] {
  const out: Place[] = [];
  if (spec.envFile) {
    const v = env[spec.envFile];
    if (v) out.push({ where: `${spec.envFile}=${v}`, file: path.resolve(v) });
  }
  if (spec.envDir) {
    const v = env[spec.envDir];
    if (v) out.push({ where: `${spec.envDir}=${v}`, file: path.resolve(v, spec.file) });
  }
  for (const f of spec.folders) {
    const file = path.join(addonPackageRoot, f, spec.file);
    out.push({ where: file, file });
  }
  if (spec.prebuiltPackage) {
    const where = `package ${spec.prebuiltPackage}`;
    try {
      const pkgJson = createRequire(path.join(addonPackageRoot, 'package.json')).resolve(`${spec.prebuiltPackage}/package.json`);
      out.push({ where, file: path.join(path.dirname(pkgJson), spec.file) });
    } catch {
      out.push({ where, reason: 'not installed' });
    }
  }
  return out;
}

const loaded = new Map<string, unknown>();

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
    if (have) return { addon: have as T, file: p.file };
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
      loaded.set(p.file, addon);
      return { addon, file: p.file };
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
