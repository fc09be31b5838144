// LlavaCaptioner: LLaVA-1.5-style GGUF (language model + mmproj) captioning in-process, on the llama.cpp of
// the pinned node-llama-cpp (native/captioner addon). All instructions are answered from one image
// encoding: the prompt prefix up to the image is evaluated once and each instruction continues from it.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import type { Llama, LlamaModel } from 'node-llama-cpp';

import { invalidOption, XpsrError } from '../errors.js';
import { cancelledError, fromNativeError, refusedFile, throwIfAborted } from './errors.js';
import { describeGgufProblem } from './gguf-check.js';
import { asBuffer, prepareImage } from './image.js';
import { LLAVA15_PROMPT_TEMPLATE, postprocessCaption, splitPromptTemplate } from './instructions.js';
import {
  type CaptionerVariant,
  detectVariant,
  loadCaptionerAddon,
  type NativeCaptionerModel,
  type NativeCaptionJob,
  type NativeCaptionStats,
  type NativeLoadInfo,
} from './native.js';
import type { CaptionImage, CaptionOptions, Captioner, GenerationOptions } from './types.js';

export interface LlavaCaptionerOptions extends GenerationOptions {
  /** Path of the language model GGUF (e.g. a llava-1.5-7b Q4_K_M conversion). */
  model?: string;
  /** Or a node-llama-cpp LlamaModel whose weights are shared (its file must be the LLaVA language model). */
  llamaModel?: LlamaModel;
  /** Path of the multimodal projector GGUF (mmproj, CLIP vision tower + projector). */
  mmproj: string;
  /** A node-llama-cpp instance to run on (default: getLlama({ build: 'never', gpu })). */
  llama?: Llama;
  /** Backend when `llama` is not given: 'auto' (CUDA or Vulkan when usable, else CPU), false = CPU. */
  gpu?: 'auto' | false | 'cuda' | 'vulkan';
  /** Layers of the language model on the GPU (own load only): 'max' (default on GPU) or a number. */
  gpuLayers?: number | 'max';
  /** Run the vision encoder on the GPU (default: when node-llama-cpp runs on a GPU). */
  mmprojGpu?: boolean;
  /** KV cache size in tokens (image tokens + prompt + answer; 576 image tokens for llava-1.5). Default 2048. */
  contextSize?: number;
  /** Prefill batch size. Default 512. */
  batchSize?: number;
  /** CPU threads (default: available cores - 1, at least 1). */
  threads?: number;
  /** Prompt with `<image>` and `{instruction}`; default LLAVA15_PROMPT_TEMPLATE (official XPSR format). */
  promptTemplate?: string;
  /**
   * Evaluate the image once for all instructions of a call, and continue from the image the previous call
   * left in the cache when it is the same image (same pixels, same prompt prefix): asking for the two
   * captions in two calls encodes the image once too. Default true. false = one full pass per instruction.
   */
  sharePrefix?: boolean;
  /** Apply the XPSR post-processing (default true). */
  postprocess?: boolean;
  /** Run a warm-up encode when loading (useful on GPU). Default false. */
  warmup?: boolean;
  /** Generate at least this many tokens (end-of-sequence suppressed before); for benchmarks. Default 0. */
  minTokens?: number;
  /** Cancels loading. */
  signal?: AbortSignal;
}

export interface LlavaCaptionResult {
  captions: string[];
  /** Answers before post-processing. */
  raw: string[];
  /** Native timings plus decodeImageMs (lib/image decode; 0 for raw RGB) and totalMs. */
  stats: NativeCaptionStats & { decodeImageMs: number; totalMs: number };
}

/** Default answer length: the official script's max_length=200 minus its ~25 prompt tokens. */
export const LLAVA_DEFAULT_MAX_TOKENS = 175;

const sharedLlamas = new Map<string, Promise<Llama>>();

async function defaultLlama(gpu: LlavaCaptionerOptions['gpu']): Promise<Llama> {
  const key = String(gpu ?? 'auto');
  let p = sharedLlamas.get(key);
  if (!p) {
    p = (async () => {
      const { getLlama } = await import('node-llama-cpp');
      return getLlama({ build: 'never', gpu: gpu ?? 'auto' });
    })();
    sharedLlamas.set(key, p);
    p.catch(() => sharedLlamas.delete(key));
  }
  try {
    return await p;
  } catch (e) {
    // a GPU asked for by name and not usable: the device; anything else: this platform
    const device = gpu === 'cuda' || gpu === 'vulkan';
    throw new XpsrError(
      device ? 'ERR_DEVICE_UNAVAILABLE' : 'ERR_UNSUPPORTED',
      `node-llama-cpp has no usable prebuilt ${device ? `${gpu} ` : ''}binary here: ${(e as Error).message}`,
      { gpu: gpu ?? 'auto' },
      { cause: e },
    );
  }
}

/** Cheap, content-based fingerprint of a (possibly multi-GB) file: size + SHA-256 of its first and last MiB. */
export function fileFingerprint(file: string): string {
  const fd = fs.openSync(file, 'r');
  try {
    const size = fs.fstatSync(fd).size;
    const h = createHash('sha256').update(String(size));
    const n = Math.min(size, 1 << 20);
    const buf = new Uint8Array(n);
    fs.readSync(fd, buf, 0, n, 0);
    h.update(buf);
    if (size > n) {
      const m = Math.min(size - n, 1 << 20);
      const tail = new Uint8Array(m);
      fs.readSync(fd, tail, 0, m, size - m);
      h.update(tail);
    }
    return h.digest('hex').slice(0, 32);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Checks that `file` exists and starts like a GGUF file; throws XpsrError ERR_WEIGHTS_MISSING or
 * ERR_WEIGHTS_INVALID (details: file, role) otherwise.
 */
export function checkGgufFile(file: string, what: 'model' | 'mmproj'): void {
  const label = what === 'model' ? 'language model' : 'mmproj (multimodal projector)';
  const details = { file, role: what };
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch {
    throw new XpsrError('ERR_WEIGHTS_MISSING', `LLaVA ${label} file not found: ${file}`, details);
  }
  if (!st.isFile()) throw new XpsrError('ERR_WEIGHTS_MISSING', `LLaVA ${label} path is not a file: ${file}`, details);
  const head = new Uint8Array(8);
  const fd = fs.openSync(file, 'r');
  let n: number;
  try {
    n = fs.readSync(fd, head, 0, 8, 0);
  } finally {
    fs.closeSync(fd);
  }
  if (n < 8 || String.fromCharCode(...head.subarray(0, 4)) !== 'GGUF') {
    throw new XpsrError('ERR_WEIGHTS_INVALID', `LLaVA ${label} is not a GGUF file (bad magic): ${file}`, details);
  }
  const version = new DataView(head.buffer).getUint32(4, true);
  if (version < 2 || version > 3) {
    throw new XpsrError('ERR_WEIGHTS_INVALID', `LLaVA ${label} has unsupported GGUF version ${version}: ${file}`, details);
  }
}

function linkSignal(signal: AbortSignal | undefined, onAbort: () => void): () => void {
  if (!signal) return () => {};
  signal.addEventListener('abort', onAbort, { once: true });
  return () => signal.removeEventListener('abort', onAbort);
}

interface DisposalHandle {
  dispose(): void;
}
interface InternalModel {
  _model?: object;
  _modelPath?: string;
  _backendModelDisposeGuard?: { createPreventDisposalHandle(): DisposalHandle };
}
interface InternalLlama {
  _backendDisposeGuard?: { createPreventDisposalHandle(): DisposalHandle };
}

let nextJobId = 1;

export class LlavaCaptioner implements Captioner {
  readonly kind = 'llava';
  readonly id: string;
  readonly cacheable = true;
  readonly variant: CaptionerVariant;
  readonly info: NativeLoadInfo;
  readonly #native: NativeCaptionerModel;
  readonly #options: LlavaCaptionerOptions;
  readonly #template: { prefix: string; suffix(instruction: string): string };
  readonly #handles: DisposalHandle[];
  readonly #unsubscribe: Array<() => void> = [];
  #queue: Promise<unknown> = Promise.resolve();
  #currentJob = 0;
  #disposed = false;
  #disposing: Promise<void> | undefined;

  private constructor(
    native: NativeCaptionerModel,
    variant: CaptionerVariant,
    info: NativeLoadInfo,
    options: LlavaCaptionerOptions,
    id: string,
    handles: DisposalHandle[],
  ) {
    this.#native = native;
    this.variant = variant;
    this.info = info;
    this.#options = options;
    this.id = id;
    this.#handles = handles;
    this.#template = splitPromptTemplate(options.promptTemplate ?? LLAVA15_PROMPT_TEMPLATE, info.marker);
  }

  /** Loads the model pair (off the main thread) and returns a ready captioner. */
  static async create(options: LlavaCaptionerOptions): Promise<LlavaCaptioner> {
    if (!options || typeof options.mmproj !== 'string' || !options.mmproj) {
      throw invalidOption('mmproj', 'the path of the multimodal projector GGUF', options?.mmproj);
    }
    if (!options.model && !options.llamaModel) {
      throw invalidOption('model', 'the path of the language model GGUF (or give `llamaModel`)', options.model);
    }
    const template = options.promptTemplate ?? LLAVA15_PROMPT_TEMPLATE;
    try {
      splitPromptTemplate(template, '<__media__>');
    } catch (e) {
      throw new XpsrError('ERR_INVALID_OPTION', `Invalid option 'promptTemplate': ${(e as Error).message}`, { option: 'promptTemplate' });
    }
    const shared = options.llamaModel as (LlamaModel & InternalModel) | undefined;
    if (shared && shared.disposed) throw new XpsrError('ERR_DISPOSED', 'the LlamaModel given as `llamaModel` is disposed');
    if (options.model && !shared) checkGgufFile(options.model, 'model');
    checkGgufFile(options.mmproj, 'mmproj');
    throwIfAborted(options.signal);

    const llama = shared?.llama ?? options.llama ?? (await defaultLlama(options.gpu));
    const variant = detectVariant(llama);
    const addon = loadCaptionerAddon(variant);
    const onGpu = variant !== 'cpu';
    const threads = options.threads ?? Math.max(1, (os.availableParallelism?.() ?? os.cpus().length) - 1);
    const contextSize = options.contextSize ?? 2048;
    const batchSize = options.batchSize ?? 512;
    for (const [k, v, min] of [
      ['contextSize', contextSize, 64],
      ['batchSize', batchSize, 1],
      ['threads', threads, 1],
    ] as const) {
      if (!Number.isInteger(v) || v < min) throw invalidOption(k, `an integer >= ${min}`, v);
    }
    const gpuLayers = options.gpuLayers === undefined ? (onGpu ? -1 : 0) : options.gpuLayers === 'max' ? -1 : options.gpuLayers;

    // Keep node-llama-cpp's model / backend alive while this captioner uses them.
    const handles: DisposalHandle[] = [];
    const llamaGuard = (llama as unknown as InternalLlama)._backendDisposeGuard;
    if (llamaGuard) handles.push(llamaGuard.createPreventDisposalHandle());
    let borrowModel: object | undefined;
    let borrowModelSize: number | undefined;
    if (shared) {
      if (!shared._model || !shared._backendModelDisposeGuard) {
        handles.forEach((h) => h.dispose());
        throw new XpsrError('ERR_UNSUPPORTED', 'this node-llama-cpp version does not expose what sharing a LlamaModel needs');
      }
      handles.push(shared._backendModelDisposeGuard.createPreventDisposalHandle());
      borrowModel = shared._model;
      borrowModelSize = shared.size;
    }

    const native = new addon.CaptionerModel();
    const jobId = nextJobId++;
    const unlink = linkSignal(options.signal, () => native.cancel(jobId));
    let info: NativeLoadInfo;
    try {
      info = await native.load({
        modelPath: shared ? undefined : path.resolve(options.model!),
        borrowModel,
        borrowModelSize,
        mmprojPath: path.resolve(options.mmproj),
        contextSize,
        batchSize,
        threads,
        gpuLayers,
        mmprojGpu: options.mmprojGpu ?? onGpu,
        warmup: options.warmup ?? false,
        jobId,
      });
    } catch (e) {
      handles.forEach((h) => h.dispose());
      const err = fromNativeError(e);
      // name the file llama.cpp refused, and say what is wrong with it when its structure shows it
      const role = refusedFile(e);
      if (role) {
        const file = role === 'model' ? options.model! : options.mmproj;
        const why = describeGgufProblem(file);
        throw new XpsrError(err.code, why ? `${err.message}: ${why}` : err.message, { file, role }, { cause: e });
      }
      throw err;
    } finally {
      unlink();
    }

    const modelKey = shared
      ? typeof shared._modelPath === 'string' && fs.existsSync(shared._modelPath)
        ? fileFingerprint(shared._modelPath)
        : `${shared.filename ?? 'model'}:${shared.size}`
      : fileFingerprint(options.model!);
    const defaults = {
      template,
      maxTokens: options.maxTokens ?? LLAVA_DEFAULT_MAX_TOKENS,
      temperature: options.temperature ?? 0,
      topK: options.topK ?? 40,
      topP: options.topP ?? 0.95,
      seed: options.seed ?? 0,
      minTokens: options.minTokens ?? 0,
      postprocess: options.postprocess ?? true,
    };
    const id =
      `llava:${modelKey}:${fileFingerprint(options.mmproj)}:` + createHash('sha256').update(JSON.stringify(defaults)).digest('hex').slice(0, 16);
    const cap = new LlavaCaptioner(native, variant, info, options, id, handles);
    // node-llama-cpp disposing the model or the backend first disposes this captioner.
    const onDispose = () => {
      void cap.dispose();
    };
    if (shared) cap.#unsubscribe.push(subscribe(shared.onDispose, onDispose));
    cap.#unsubscribe.push(subscribe(llama.onDispose, onDispose));
    return cap;
  }

  get disposed(): boolean {
    return this.#disposed;
  }

  async caption(image: CaptionImage, instructions: readonly string[], options: CaptionOptions = {}): Promise<string[]> {
    return (await this.captionDetailed(image, instructions, options)).captions;
  }

  /** Like caption(), with the raw answers and timings (image encode, prefill, generation). */
  async captionDetailed(
    image: CaptionImage,
    instructions: readonly string[],
    options: CaptionOptions & { sharePrefix?: boolean; minTokens?: number } = {},
  ): Promise<LlavaCaptionResult> {
    if (!Array.isArray(instructions) || instructions.some((s) => typeof s !== 'string')) {
      throw new XpsrError('ERR_INVALID_ARGUMENT', 'instructions must be an array of strings');
    }
    if (instructions.some((s) => s.includes(this.info.marker))) {
      throw new XpsrError('ERR_INVALID_ARGUMENT', `instructions must not contain the media marker ${this.info.marker}`);
    }
    if (this.#disposed) throw new XpsrError('ERR_DISPOSED', 'the captioner was disposed');
    throwIfAborted(options.signal);
    const t0 = performance.now();
    const img = await prepareImage(image, options.name);
    const decodeImageMs = performance.now() - t0;
    const o = this.#options;
    const gen = {
      maxTokens: options.maxTokens ?? o.maxTokens ?? LLAVA_DEFAULT_MAX_TOKENS,
      minTokens: options.minTokens ?? o.minTokens ?? 0,
      temperature: options.temperature ?? o.temperature ?? 0,
      topK: options.topK ?? o.topK ?? 40,
      topP: options.topP ?? o.topP ?? 0.95,
      seed: options.seed ?? o.seed ?? 0,
    };
    if (!Number.isInteger(gen.maxTokens) || gen.maxTokens < 0) throw invalidOption('maxTokens', 'an integer >= 0', gen.maxTokens);
    if (!Number.isFinite(gen.temperature) || gen.temperature < 0) throw invalidOption('temperature', 'a number >= 0', gen.temperature);
    if (instructions.length === 0) return { captions: [], raw: [], stats: { ...emptyStats(), decodeImageMs } };
    const base = {
      prefix: this.#template.prefix,
      prefixKey: createHash('sha256').update(img.contentHash()).update('\0').update(this.#template.prefix).digest('hex'),
      suffixes: instructions.map((s) => this.#template.suffix(s)),
      sharePrefix: options.sharePrefix ?? o.sharePrefix ?? true,
      ...gen,
    };
    const res = await this.#run({ ...base, jobId: 0, image: { rgb: asBuffer(img.data), width: img.width, height: img.height } }, options.signal);
    const decoder = new TextDecoder('utf-8', { fatal: false });
    const raw = res.answers.map((b) => decoder.decode(b));
    const post = o.postprocess ?? true;
    return {
      captions: raw.map((r) => (post ? postprocessCaption(r) : r)),
      raw,
      stats: { ...res.stats, decodeImageMs, totalMs: performance.now() - t0 },
    };
  }

  /** Serializes native calls (one llama_context); cancellation reaches the native job through its id. */
  #run(job: NativeCaptionJob, signal?: AbortSignal): Promise<{ answers: Uint8Array[]; stats: NativeCaptionStats }> {
    const p = this.#queue.then(async () => {
      if (this.#disposed) throw new XpsrError('ERR_DISPOSED', 'the captioner was disposed');
      throwIfAborted(signal);
      const jobId = nextJobId++;
      this.#currentJob = jobId;
      const unlink = linkSignal(signal, () => this.#native.cancel(jobId));
      try {
        return await this.#native.caption({ ...job, jobId });
      } catch (e) {
        const err = fromNativeError(e);
        if (err.code === 'ERR_CANCELLED' && signal?.aborted) throw cancelledError(signal.reason);
        throw err;
      } finally {
        unlink();
        this.#currentJob = 0;
      }
    });
    this.#queue = p.catch(() => undefined);
    return p;
  }

  /** Cancels the running call, waits for queued calls to settle, frees native memory. Idempotent. */
  dispose(): Promise<void> {
    if (this.#disposing) return this.#disposing;
    this.#disposed = true;
    if (this.#currentJob) this.#native.cancel(this.#currentJob);
    this.#disposing = (async () => {
      await this.#queue;
      try {
        this.#native.dispose();
      } finally {
        this.#unsubscribe.forEach((u) => u());
        this.#handles.forEach((h) => h.dispose());
      }
    })();
    return this.#disposing;
  }
}

function emptyStats(): LlavaCaptionResult['stats'] {
  return {
    imageTokens: 0,
    imagePositions: 0,
    imagePasses: 0,
    prefixReused: false,
    decodeImageMs: 0,
    encodeMs: 0,
    imagePrefillMs: 0,
    prefixPrefillMs: 0,
    answers: [],
    totalMs: 0,
  };
}

interface EventRelayLike {
  createListener(cb: () => void): { dispose(): void };
}
function subscribe(relay: unknown, cb: () => void): () => void {
  const r = relay as EventRelayLike | undefined;
  if (!r || typeof r.createListener !== 'function') return () => {};
  const l = r.createListener(cb);
  return () => l.dispose();
}
