/**
 * Finds and loads the native engine addon (XPSR_NATIVE_ADDON, else a local build in build/Release, else the
 * prebuilt @xpsr-native/<platform> package; lib/addon-loader.ts) and types its surface, which mirrors
 * native/napi/addon.cpp one to one. Nothing else in lib/ touches the addon directly.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { XpsrError } from './errors.js';
import { loadAddon, platformPackage, prebuiltRemedy } from './addon-loader.js';

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
    options: { path?: string; configJson?: string; synthetic?: boolean; seed?: number; vaeEncoder?: boolean; vaeDecoder?: boolean; checkOnly?: boolean },
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
export interface NativeAddon {
  NativeEngine: new (options: { device: string; threads?: number }) => NativeEngineHandle;
  CancelFlag: new () => NativeCancelFlag;
  systemInfo(): NativeSystemInfo;
  listDevices(): NativeDeviceList;
  timestepFeatures(t: number, dim: number, flipSinToCos?: boolean, freqShift?: number): Float32Array;
}

/** Root of the installed package (the folder holding package.json). */
export const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

let cached: NativeAddon | undefined;

/** Loads the addon once; throws an XpsrError listing every place tried and what to do. */
export function loadNative(): NativeAddon {
  cached ??= loadAddon<NativeAddon>({
    name: 'xpsr-native engine addon',
    file: 'xpsr.node',
    envFile: 'XPSR_NATIVE_ADDON',
    folders: ['build/Release', 'build/Debug'],
    prebuiltPackage: platformPackage(),
    remedies: [
      prebuiltRemedy(),
      'build from source: `npx xpsr build` in your app (or `npm run build:native` in a clone); it needs CMake >= 3.18 ' +
        'and a C++17 compiler (g++ or clang++), and nvcc for the CUDA backend;',
      'set XPSR_NATIVE_ADDON to the path of an xpsr.node.',
    ],
  }).addon;
  return cached;
}

/** Wraps a native rejection into an XpsrError that keeps the caller's stack (created before the call). */
export function nativeError(e: unknown, callerStack: Error): XpsrError {
  const err = e as { code?: string; message?: string };
  const x = new XpsrError(err?.code ?? 'ERR_INTERNAL', err?.message ?? String(e));
  if (callerStack.stack) x.stack = `${x.name}: ${x.message}\n${callerStack.stack.split('\n').slice(1).join('\n')}`;
  return x;
}
