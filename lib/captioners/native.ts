// Loading the captioner addon (xpsr_captioner.<variant>.node, through the package's one addon loader) that
// matches the node-llama-cpp binary already loaded by getLlama(), and the types of its surface
// (native/captioner/src/addon.cpp).
import fs from 'node:fs';
import path from 'node:path';

import { addonPackageRoot, loadAddon, platformPackage, prebuiltRemedy, type AddonSpec } from '../addon-loader.js';
import { XpsrError } from '../errors.js';

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
  /** The image evaluated by the previous call was reused (imagePasses 0). */
  prefixReused: boolean;
  encodeMs: number;
  imagePrefillMs: number;
  prefixPrefillMs: number;
  answers: NativeAnswerStats[];
}

export interface NativeCaptionJob {
  jobId: number;
  /** Packed 8-bit RGB, decoded by lib/image. */
  image: { rgb: Uint8Array; width: number; height: number };
  prefix: string;
  /** Identity of the image + prefix: a call with the key of the previous one reuses its image in the cache. */
  prefixKey: string;
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
  /** State of the calling environment (main thread or worker): CaptionerModel objects alive, and loaded. */
  envInfo(): { objects: number; loaded: number };
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

export function captionerDisabledByEnv(): boolean {
  const v = String(process.env.XPSR_CAPTIONER ?? '')
    .trim()
    .toLowerCase();
  return v === 'off' || v === '0' || v === 'false' || v === 'disabled';
}

export function installedNodeLlamaCppVersion(): string | undefined {
  const d = findUp(addonPackageRoot, (dir) => fs.existsSync(path.join(dir, 'node_modules', 'node-llama-cpp', 'package.json')));
  if (!d) return undefined;
  return JSON.parse(fs.readFileSync(path.join(d, 'node_modules', 'node-llama-cpp', 'package.json'), 'utf8')).version;
}

const REBUILD = 'build it from source with `npx xpsr build` (or `node scripts/build-captioner.mjs` in a clone, part of `npm ci`);';

/**
 * Why the addon at `file` must not be loaded for `variant` (undefined: it may): its folder's manifest.json
 * must exist, name the installed node-llama-cpp version and list the variant.
 */
function manifestProblem(file: string, variant: CaptionerVariant): string | undefined {
  const manifest = path.join(path.dirname(file), 'manifest.json');
  let m: CaptionerManifest;
  try {
    m = JSON.parse(fs.readFileSync(manifest, 'utf8'));
  } catch {
    return `${manifest} is missing or unreadable (an unfinished build)`;
  }
  const installed = installedNodeLlamaCppVersion();
  if (installed && m.nodeLlamaCpp !== installed) return `built for node-llama-cpp ${m.nodeLlamaCpp}, but ${installed} is installed`;
  if (!m.variants?.includes(variant)) return `built without the ${variant} variant (built: ${(m.variants ?? []).join(', ')})`;
  return undefined;
}

/** Which prebuilt node-llama-cpp binary a Llama instance runs. */
export function detectVariant(llama: { gpu: unknown }): CaptionerVariant {
  const g = llama.gpu;
  const v: CaptionerVariant | undefined = g === false ? 'cpu' : g === 'cuda' ? 'cuda' : g === 'vulkan' ? 'vulkan' : undefined;
  if (!v) {
    throw new XpsrError('ERR_UNSUPPORTED', `node-llama-cpp runs a '${String(g)}' binary; the captioner supports cpu, cuda and vulkan`);
  }
  if (process.platform === 'linux') {
    // The addon links the prebuilt sonames (libllama.v0.4.0.so, libllama.cuda.v0.4.0.so, ...). A local
    // node-llama-cpp build has hashed sonames and cannot host it.
    let maps = '';
    try {
      maps = fs.readFileSync('/proc/self/maps', 'utf8');
    } catch {
      /* not available: trust llama.gpu */
    }
    if (maps) {
      const names = new Set(maps.match(/[^/\s]*libllama\.[^/\s]*\.so/g) ?? []);
      const want = v === 'cpu' ? /^libllama\.v[0-9.]+\.so$/ : new RegExp(`^libllama\\.${v}\\.v[0-9.]+\\.so$`);
      if (names.size > 0 && ![...names].some((n) => want.test(n))) {
        throw new XpsrError(
          'ERR_UNSUPPORTED',
          `node-llama-cpp loaded ${[...names].join(', ')}, not one of its prebuilt ${v} binaries the captioner is linked ` +
            "against; use getLlama({ build: 'never' })",
        );
      }
    }
  }
  return v;
}

/**
 * Loads the addon for `variant` (once per environment). Must run after getLlama() has loaded
 * node-llama-cpp's binary. Throws XpsrError(ERR_NATIVE_MISSING) listing every place tried.
 */
export function loadCaptionerAddon(variant: CaptionerVariant): NativeCaptionerAddon {
  if (captionerDisabledByEnv()) {
    throw new XpsrError(
      'ERR_NATIVE_MISSING',
      'the in-process LLaVA captioner is disabled (XPSR_CAPTIONER=off); use the http, sidecar or fixed captioners, or unset it and ' +
        REBUILD.slice(0, -1),
      { addon: 'captioner' },
    );
  }
  return loadAddon<NativeCaptionerAddon>(captionerAddonSpec(variant)).addon;
}

/** Where the addon of `variant` is looked for (lib/addon-loader.ts), and how it is checked. */
export function captionerAddonSpec(variant: CaptionerVariant): AddonSpec {
  return {
    name: `captioner addon (${variant})`,
    file: `xpsr_captioner.${variant}.node`,
    envDir: 'XPSR_CAPTIONER_ADDON_DIR',
    folders: ['build-captioner/Release'],
    prebuiltPackage: platformPackage(),
    prebuiltFolder: 'captioner',
    check: (file) => manifestProblem(file, variant),
    remedies: [
      prebuiltRemedy(),
      REBUILD,
      `for the ${variant} variant, install node-llama-cpp's ${variant} package (@node-llama-cpp/${process.platform}-${process.arch}` +
        `${variant === 'cpu' ? '' : `-${variant}`}) and rebuild, or run node-llama-cpp on another backend;`,
      "node-llama-cpp must be loaded first, with the same variant (getLlama({ build: 'never' }));",
      'or set XPSR_CAPTIONER_ADDON_DIR to a folder holding a built xpsr_captioner.<variant>.node and its manifest.json.',
    ],
  };
}
