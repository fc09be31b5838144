// Loading the captioner addon (build-captioner/Release/xpsr_captioner.<variant>.node) that matches the
// node-llama-cpp binary already loaded by getLlama().
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { CaptionError } from './errors.js';

export type CaptionerVariant = 'cpu' | 'cuda' | 'vulkan';

export interface NativeLoadOptions {
  modelPath?: string;
  borrowModel?: object;
  borrowModelSize?: number;
  mmprojPath: string;
  contextSize: number;
  batchSize: number;
  threads: number;
  gpuLayers: number;
  mmprojGpu: boolean;
  warmup: boolean;
  jobId: number;
}

export interface NativeLoadInfo {
  contextSize: number;
  embeddingSize: number;
  vocabSize: number;
  borrowed: boolean;
  marker: string;
  description: string;
}

export interface NativeAnswerStats {
  promptTokens: number;
  generatedTokens: number;
  prefillMs: number;
  generateMs: number;
  stopReason: 'eos' | 'maxTokens' | 'contextFull';
}

export interface NativeCaptionStats {
  imageTokens: number;
  imagePositions: number;
  imagePasses: number;
  decodeImageMs: number;
  encodeMs: number;
  imagePrefillMs: number;
  prefixPrefillMs: number;
  answers: NativeAnswerStats[];
}

export interface NativeCaptionJob {
  jobId: number;
  image: { encoded: Uint8Array } | { rgb: Uint8Array; width: number; height: number };
  prefix: string;
  suffixes: string[];
  sharePrefix: boolean;
  maxTokens: number;
  minTokens: number;
  temperature: number;
  topK: number;
  topP: number;
  seed: number;
}

export interface NativeCaptionerModel {
  load(options: NativeLoadOptions): Promise<NativeLoadInfo>;
  caption(job: NativeCaptionJob): Promise<{ answers: Uint8Array[]; stats: NativeCaptionStats }>;
  cancel(jobId: number): void;
  dispose(): void;
  info(): { loaded: boolean; disposed: boolean; busy: boolean; borrowed: boolean };
}

export interface NativeCaptionerAddon {
  CaptionerModel: new () => NativeCaptionerModel;
  buildInfo(): { mtmdMarker: string; napiVersion: number; systemInfo: string; devices: string[] };
}

export interface CaptionerManifest {
  variants: CaptionerVariant[];
  nodeLlamaCpp: string;
  llamaCpp: { tag: string; commit: string };
}

function findUp(start: string, test: (dir: string) => boolean): string | undefined {
  for (let d = start; ; d = path.dirname(d)) {
    if (test(d)) return d;
    if (path.dirname(d) === d) return undefined;
  }
}

/** Root of the xpsr-native package (the folder holding its package.json). */
export function packageRoot(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const root = findUp(here, (d) => {
    try {
      return JSON.parse(fs.readFileSync(path.join(d, 'package.json'), 'utf8')).name === 'xpsr-native';
    } catch {
      return false;
    }
  });
  if (!root) throw new CaptionError('ERR_INTERNAL', `cannot find the xpsr-native package root above ${here}`);
  return root;
}

/** Folder with the built addons (env XPSR_CAPTIONER_ADDON_DIR overrides). */
export function captionerAddonDir(): string {
  return process.env.XPSR_CAPTIONER_ADDON_DIR || path.join(packageRoot(), 'build-captioner', 'Release');
}

export function captionerDisabledByEnv(): boolean {
  const v = String(process.env.XPSR_CAPTIONER ?? '').trim().toLowerCase();
  return v === 'off' || v === '0' || v === 'false' || v === 'disabled';
}

export function installedNodeLlamaCppVersion(): string | undefined {
  const d = findUp(packageRoot(), (dir) => fs.existsSync(path.join(dir, 'node_modules', 'node-llama-cpp', 'package.json')));
  if (!d) return undefined;
  return JSON.parse(fs.readFileSync(path.join(d, 'node_modules', 'node-llama-cpp', 'package.json'), 'utf8')).version;
}

const rebuildHint = 'build it with `node scripts/build-captioner.mjs` (part of `npm install`)';

export function readCaptionerManifest(): CaptionerManifest {
  if (captionerDisabledByEnv()) {
    throw new CaptionError('ERR_CAPTIONER_NOT_BUILT',
      'the in-process LLaVA captioner is disabled (XPSR_CAPTIONER=off); use the http or fixed captioners, or unset it and ' +
      rebuildHint);
  }
  const dir = captionerAddonDir();
  const file = path.join(dir, 'manifest.json');
  let m: CaptionerManifest;
  try {
    m = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch {
    throw new CaptionError('ERR_CAPTIONER_NOT_BUILT', `the captioner addon is not built (${file} missing); ${rebuildHint}`);
  }
  const installed = installedNodeLlamaCppVersion();
  if (installed && m.nodeLlamaCpp !== installed) {
    throw new CaptionError('ERR_CAPTIONER_NOT_BUILT',
      `the captioner addon was built for node-llama-cpp ${m.nodeLlamaCpp} but ${installed} is installed; ${rebuildHint}`);
  }
  return m;
}

/** Which prebuilt node-llama-cpp binary a Llama instance runs. */
export function detectVariant(llama: { gpu: unknown }): CaptionerVariant {
  const g = llama.gpu;
  const v: CaptionerVariant | undefined = g === false ? 'cpu' : g === 'cuda' ? 'cuda' : g === 'vulkan' ? 'vulkan' : undefined;
  if (!v) {
    throw new CaptionError('ERR_CAPTIONER_UNSUPPORTED', `node-llama-cpp runs a '${String(g)}' binary; the captioner supports cpu, cuda and vulkan`);
  }
  if (process.platform === 'linux') {
    // The addon links the prebuilt sonames (libllama.v0.4.0.so, libllama.cuda.v0.4.0.so, ...). A local
    // node-llama-cpp build has hashed sonames and cannot host it.
    let maps = '';
    try {
      maps = fs.readFileSync('/proc/self/maps', 'utf8');
    } catch { /* not available: trust llama.gpu */ }
    if (maps) {
      const names = new Set((maps.match(/[^/\s]*libllama\.[^/\s]*\.so/g) ?? []));
      const want = v === 'cpu' ? /^libllama\.v[0-9.]+\.so$/ : new RegExp(`^libllama\\.${v}\\.v[0-9.]+\\.so$`);
      if (names.size > 0 && ![...names].some((n) => want.test(n))) {
        throw new CaptionError('ERR_CAPTIONER_UNSUPPORTED',
          `node-llama-cpp loaded ${[...names].join(', ')}, not one of its prebuilt ${v} binaries the captioner is linked ` +
          "against; use getLlama({ build: 'never' })");
      }
    }
  }
  return v;
}

const loaded = new Map<CaptionerVariant, NativeCaptionerAddon>();

/** Loads the addon for `variant`. Must run after getLlama() has loaded node-llama-cpp's binary. */
export function loadCaptionerAddon(variant: CaptionerVariant): NativeCaptionerAddon {
  const have = loaded.get(variant);
  if (have) return have;
  const m = readCaptionerManifest();
  if (!m.variants.includes(variant)) {
    throw new CaptionError('ERR_CAPTIONER_NOT_BUILT',
      `the captioner addon was built without the ${variant} variant (built: ${m.variants.join(', ')}); ` +
      `install @node-llama-cpp's ${variant} package and rebuild, or run node-llama-cpp on another backend`);
  }
  const file = path.join(captionerAddonDir(), `xpsr_captioner.${variant}.node`);
  let addon: NativeCaptionerAddon;
  try {
    addon = createRequire(import.meta.url)(file) as NativeCaptionerAddon;
  } catch (e) {
    const msg = (e as Error).message;
    throw new CaptionError(fs.existsSync(file) ? 'ERR_CAPTIONER_UNSUPPORTED' : 'ERR_CAPTIONER_NOT_BUILT',
      `cannot load ${file}: ${msg}` + (/cannot open shared object/.test(msg)
        ? ' (node-llama-cpp must be loaded first, with the same variant)' : `; ${rebuildHint}`), { cause: e });
  }
  loaded.set(variant, addon);
  return addon;
}
