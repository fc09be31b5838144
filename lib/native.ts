/**
 * Finds and loads the native engine addon (build/Release/xpsr.node, built by `npm install` with
 * cmake-js, or build/Release via node-gyp) and types its surface, which mirrors native/napi/addon.cpp
 * one to one. Nothing else in lib/ touches the addon directly.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { XpsrError } from './errors.js';

export interface NativeTensorIn {
  shape: number[];
  data: Float32Array | Int32Array | BigInt64Array;
}
export interface NativeTensorOut {
  shape: number[];
  data: Float32Array;
}
export interface NativeModelInfo {
  id: number;
  kind: 'text_encoder' | 'vae' | 'unet' | 'controlnet';
  path: string;
  config: string;
  description: string;
  weightBytes: number;
  parameters: number;
  tensors: number;
}
export interface NativeRunStats {
  planMs: number;
  uploadMs: number;
  computeMs: number;
  downloadMs: number;
  planReused: boolean;
  arenaBytes: number;
  naiveBytes: number;
  ops: number;
}
export interface NativeRunRequest {
  entry: string;
  models: number[];
  inputs: Record<string, NativeTensorIn>;
  params?: Record<string, number>;
  intermediates?: boolean;
}
export interface NativeCancelFlag {
  cancel(): void;
  readonly cancelled: boolean;
}
export interface NativeEngineHandle {
  readonly device: string;
  readonly description: string;
  load(
    kind: string,
    options: { path?: string; configJson?: string; variant?: string; synthetic?: boolean; seed?: number; vaeEncoder?: boolean; vaeDecoder?: boolean; checkOnly?: boolean },
  ): Promise<NativeModelInfo>;
  unload(id: number): void;
  run(req: NativeRunRequest, cancel?: NativeCancelFlag): Promise<{ outputs: Record<string, NativeTensorOut>; stats: NativeRunStats }>;
  clearPlans(): void;
  dispose(): void;
}
export interface NativeSystemInfo {
  hardwareThreads: number;
  cpuFeatures: string[];
  backends: string[];
  cudaBuilt: boolean;
  cpuBackend: string;
}
export interface NativeDeviceList {
  cuda: { index: number; name: string; computeCapability: string; totalMemory: number; freeMemory: number }[];
  reason: string;
}
/** A weights file described from its header (native/napi/weights_info.cpp). */
export interface NativeWeightsInfo {
  path: string;
  format: 'safetensors' | 'pytorch zip';
  tensors: number;
  bytes: number;
  dtypes: Record<string, number>;
  /** Original-layout Stable Diffusion single file (cond_stage_model / first_stage_model tensors). */
  singleFile: boolean;
  /** Non-empty: another model family (SDXL, SD 2.x) and why it is refused. */
  foreign: string;
  textModelLevel: boolean;
  positionIds: string;
  groups: { prefix: string; role: string; used: boolean; tensors: number; bytes: number; dtypes: Record<string, number> }[];
}
export interface NativeAddon {
  NativeEngine: new (options: { device: string; threads?: number }) => NativeEngineHandle;
  CancelFlag: new () => NativeCancelFlag;
  systemInfo(): NativeSystemInfo;
  listDevices(): NativeDeviceList;
  timestepFeatures(t: number, dim: number, flipSinToCos?: boolean, freqShift?: number): Float32Array;
  inspectWeights(path: string): NativeWeightsInfo;
  findWeightFiles(dir: string, component: string, variant?: string): string[];
}

/** Root of the installed package (the folder holding package.json). */
export const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

let cached: NativeAddon | undefined;

/** Loads the addon once; throws an XpsrError listing every place tried and what to do. */
export function loadNative(): NativeAddon {
  if (cached) return cached;
  const require = createRequire(import.meta.url);
  const candidates = [
    process.env.XPSR_NATIVE_ADDON,
    path.join(packageRoot, 'build', 'Release', 'xpsr.node'),
    path.join(packageRoot, 'build', 'Debug', 'xpsr.node'),
  ].filter((p): p is string => !!p);
  const failures: string[] = [];
  for (const p of candidates) {
    if (!existsSync(p)) {
      failures.push(`${p}: not found`);
      continue;
    }
    try {
      cached = require(p) as NativeAddon;
      return cached;
    } catch (e) {
      failures.push(`${p}: ${(e as Error).message}`);
    }
  }
  throw new XpsrError(
    'ERR_NATIVE_MISSING',
    `The xpsr-native engine addon could not be loaded (${process.platform}-${process.arch}, Node ${process.version}).\n` +
      failures.map((f) => `  - ${f}`).join('\n') +
      '\nPossible solutions:\n  - run `npm rebuild xpsr-native` (or `npm run build:native` in a clone) to build it;\n' +
      '  - install CMake >= 3.18 and a C++17 compiler (g++ or clang++), then rebuild;\n' +
      '  - set XPSR_NATIVE_ADDON to the path of a prebuilt xpsr.node.',
  );
}

/** Wraps a native rejection into an XpsrError that keeps the caller's stack (created before the call). */
export function nativeError(e: unknown, callerStack: Error): XpsrError {
  const err = e as { code?: string; message?: string };
  const x = new XpsrError(err?.code ?? 'ERR_INTERNAL', err?.message ?? String(e));
  if (callerStack.stack) x.stack = `${x.name}: ${x.message}\n${callerStack.stack.split('\n').slice(1).join('\n')}`;
  return x;
}
