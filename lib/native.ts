/**
 * Finds and loads the native engine addon (XPSR_NATIVE_ADDON, else a local build in build/Release, else the
 * prebuilt @xpsr-native/<platform> package; lib/addon-loader.ts) and types its surface, which mirrors
 * native/napi/addon.cpp one to one. Nothing else in lib/ touches the addon directly.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { XpsrError } from './errors.js';
import { loadAddon, platformPackage, prebuiltRemedy } from './addon-loader.js';

/** A float32 tensor in PyTorch layout (NCHW feature maps, [B, L, D] token sequences, [N, C] vectors). */
export interface NativeTensor {
  shape: number[];
  data: Float32Array;
}
/** Token ids [B, L]. */
export interface NativeTokenIds {
  shape: [number, number];
  data: Int32Array | BigInt64Array;
}
export type NativeModelKind = 'text_encoder' | 'vae' | 'unet' | 'controlnet';
export interface NativeModelInfo {
  id: number;
  kind: NativeModelKind;
  path: string;
  config: string;
  description: string;
  weightBytes: number;
  parameters: number;
  tensors: number;
}
export interface NativeLoadOptions {
  path?: string;
  configJson?: string;
  synthetic?: boolean;
  seed?: number;
  vaeEncoder?: boolean;
  vaeDecoder?: boolean;
  checkOnly?: boolean;
}
/** Timings and sizes of one call. */
export interface NativeRunStats {
  planMs: number;
  uploadMs: number;
  computeMs: number;
  downloadMs: number;
  planReused: boolean;
  /** Activation memory of the plan (tiled VAE: of the largest segment plan). */
  arenaBytes: number;
  naiveBytes: number;
  ops: number;
  flops: number;
}
/** A cached plan, or the sizes a step plan would have (planStep). */
export interface NativePlanInfo {
  entry: string;
  key: string;
  arenaBytes: number;
  naiveBytes: number;
  ops: number;
  flops: number;
  /** planStep: the plan exists in the cache (these are its numbers). */
  cached: boolean;
}
/** Parity intermediates by the reference implementation's module names (only with `intermediates`). */
export type NativeIntermediates = Record<string, NativeTensor>;

export interface NativeTextEncodeRequest {
  model: number;
  inputIds: NativeTokenIds;
  intermediates?: boolean;
}
export interface NativeVaeEncodeRequest {
  model: number;
  x: NativeTensor;
  intermediates?: boolean;
}
export interface NativeVaeDecodeRequest {
  model: number;
  z: NativeTensor;
  intermediates?: boolean;
}
export interface NativeVaeEncodeTiledRequest {
  model: number;
  x: NativeTensor;
  tile?: number;
  pad?: number;
}
export interface NativeVaeDecodeTiledRequest {
  model: number;
  z: NativeTensor;
  tile?: number;
  pad?: number;
}
export interface NativeCondEmbeddingRequest {
  model: number;
  image: NativeTensor;
  intermediates?: boolean;
}
/** What the ControlNet reads (controlnetForward and step): N rows in every tensor. */
export interface NativeControlNetInputs {
  sample: NativeTensor;
  timestep: number;
  ctxHigh: NativeTensor;
  ctxLow?: NativeTensor;
  /** Exactly one of the condition embedding (condEmbedding) and the condition image. */
  cond?: NativeTensor;
  image?: NativeTensor;
  /** Default: the engine's (1, the official value). */
  conditioningScale?: number;
}
export interface NativeControlNetRequest extends NativeControlNetInputs {
  model: number;
  intermediates?: boolean;
}
export interface NativeUNetRequest {
  model: number;
  sample: NativeTensor;
  timestep: number;
  ctxHigh: NativeTensor;
  ctxLow?: NativeTensor;
  down: NativeTensor[];
  mid: NativeTensor;
  intermediates?: boolean;
}
export interface NativeStepRequest extends NativeControlNetInputs {
  controlnet: number;
  unet: number;
  /** The contexts and the condition are those of the previous step of the same shapes: only shapes are read. */
  reuseConstants?: boolean;
  intermediates?: boolean;
}
export interface NativeStepShape {
  controlnet: number;
  unet: number;
  batch: number;
  height: number;
  width: number;
  /** Tokens of ctxHigh (default 77). */
  contextLength?: number;
  /** Tokens of ctxLow (default 77); 0: no low-level context. */
  lowContextLength?: number;
  /** The condition is the image (else the embedding). */
  imageCondition?: boolean;
  conditioningScale?: number;
  intermediates?: boolean;
}
/** What every entry returns besides its results. */
export interface NativeResult {
  intermediates: NativeIntermediates;
  stats: NativeRunStats;
}
export interface NativeCancelFlag {
  cancel(): void;
  readonly cancelled: boolean;
}
export interface NativeEngineHandle {
  readonly device: string;
  readonly description: string;
  load(kind: NativeModelKind, options: NativeLoadOptions): Promise<NativeModelInfo>;
  /** Returns at once: while a call runs, the model is refused to new calls and freed when the call ends. */
  unload(id: number): void;
  /** Returns at once (deferred to the end of a running call). */
  clearPlans(): void;
  /** Cached plans, most recently used first. */
  plans(): NativePlanInfo[];
  textEncode(req: NativeTextEncodeRequest, cancel?: NativeCancelFlag): Promise<NativeResult & { lastHiddenState: NativeTensor }>;
  vaeEncode(req: NativeVaeEncodeRequest, cancel?: NativeCancelFlag): Promise<NativeResult & { moments: NativeTensor }>;
  vaeDecode(req: NativeVaeDecodeRequest, cancel?: NativeCancelFlag): Promise<NativeResult & { image: NativeTensor }>;
  vaeEncodeTiled(req: NativeVaeEncodeTiledRequest, cancel?: NativeCancelFlag): Promise<NativeResult & { moments: NativeTensor }>;
  vaeDecodeTiled(req: NativeVaeDecodeTiledRequest, cancel?: NativeCancelFlag): Promise<NativeResult & { image: NativeTensor }>;
  condEmbedding(req: NativeCondEmbeddingRequest, cancel?: NativeCancelFlag): Promise<NativeResult & { cond: NativeTensor }>;
  controlnetForward(req: NativeControlNetRequest, cancel?: NativeCancelFlag): Promise<NativeResult & { down: NativeTensor[]; mid: NativeTensor }>;
  unetForward(req: NativeUNetRequest, cancel?: NativeCancelFlag): Promise<NativeResult & { sample: NativeTensor }>;
  /** `residuals` (ControlNet, down..., mid last) only with `intermediates`. */
  step(req: NativeStepRequest, cancel?: NativeCancelFlag): Promise<NativeResult & { noisePred: NativeTensor; residuals: NativeTensor[] }>;
  /** Builds and sizes the step plan of these shapes without allocating or running anything. */
  planStep(shape: NativeStepShape): Promise<NativePlanInfo>;
  dispose(): void;
}
export interface NativeSystemInfo {
  hardwareThreads: number;
  cpuFeatures: string[];
  backends: string[];
  cudaBuilt: boolean;
  cpuBackend: string;
  /** Compiled CUDA code: e.g. ['sm_80', 'sm_90', 'PTX compute_80']; empty without CUDA. */
  cudaArchitectures: string[];
  /** The compiler the addon was built with, e.g. 'g++ 12.2.0'. */
  compiler: string;
  /** The glibc version the addon was built against, e.g. '2.36' ('' when not glibc). */
  glibc: string;
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
