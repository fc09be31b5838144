/**
 * onnxruntime-node, loaded on demand (it is a development dependency of xpsr-native: install it yourself to
 * run exported models, `npm i onnxruntime-node`), and a small session wrapper that takes and returns the
 * library's `{ shape, data }` tensors. Only the few onnxruntime calls used here are typed (no type
 * dependency on the package).
 */
import { XpsrError } from '../errors.js';
import type { Tensor } from '../engine/engine.js';

interface OrtTensor {
  readonly dims: readonly number[];
  readonly data: unknown;
}
interface OrtSession {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  run(feeds: Record<string, OrtTensor>): Promise<Record<string, OrtTensor>>;
  release(): Promise<void>;
}
interface OrtModule {
  Tensor: new (type: 'float32' | 'int64', data: Float32Array | BigInt64Array, dims: number[]) => OrtTensor;
  InferenceSession: {
    create(
      path: string,
      options: {
        intraOpNumThreads?: number;
        interOpNumThreads?: number;
        graphOptimizationLevel?: 'disabled' | 'basic' | 'extended' | 'all';
        executionMode?: 'sequential' | 'parallel';
        logSeverityLevel?: 0 | 1 | 2 | 3 | 4;
      },
    ): Promise<OrtSession>;
  };
}

let ortModule: OrtModule | undefined;

/** The onnxruntime-node module, or ERR_UNSUPPORTED saying how to install it. */
export async function loadOrt(): Promise<OrtModule> {
  if (ortModule) return ortModule;
  try {
    const m = (await import('onnxruntime-node' as string)) as { default?: OrtModule } & OrtModule;
    ortModule = m.default ?? m;
    return ortModule;
  } catch (e) {
    throw new XpsrError(
      'ERR_UNSUPPORTED',
      `engine 'onnxruntime' needs the onnxruntime-node package (${(e as Error).message.split('\n')[0]}); install it with ` +
        '`ONNXRUNTIME_NODE_INSTALL=skip npm i onnxruntime-node@1.30.0` (the variable skips its CUDA download)',
    );
  }
}

export interface SessionOptions {
  /** Intra-op threads (default: onnxruntime's choice, all cores). */
  threads?: number;
  /** Graph optimisations (default 'all'). */
  optimization?: 'disabled' | 'basic' | 'extended' | 'all';
}

/** An int64 input (token ids). */
export interface IdsTensor {
  shape: number[];
  ids: BigInt64Array;
}

export class OnnxSession {
  private constructor(
    readonly file: string,
    private session: OrtSession | undefined,
    private readonly ort: OrtModule,
  ) {}

  static async open(file: string, options: SessionOptions = {}): Promise<OnnxSession> {
    const ort = await loadOrt();
    try {
      const s = await ort.InferenceSession.create(file, {
        ...(options.threads ? { intraOpNumThreads: options.threads } : {}),
        interOpNumThreads: 1,
        executionMode: 'sequential',
        graphOptimizationLevel: options.optimization ?? 'all',
        logSeverityLevel: 3,
      });
      return new OnnxSession(file, s, ort);
    } catch (e) {
      throw new XpsrError('ERR_WEIGHTS_INVALID', `onnxruntime cannot load ${file}: ${(e as Error).message}`);
    }
  }

  get inputNames(): readonly string[] {
    return this.#live().inputNames;
  }
  get outputNames(): readonly string[] {
    return this.#live().outputNames;
  }

  #live(): OrtSession {
    if (!this.session) throw new XpsrError('ERR_DISPOSED', `the onnxruntime session of ${this.file} has been released`);
    return this.session;
  }

  /** Runs the model; float inputs are `{ shape, data }`, int64 inputs `{ shape, ids }`. */
  async run(feeds: Record<string, Tensor | IdsTensor>): Promise<Record<string, Tensor>> {
    const s = this.#live();
    const inputs: Record<string, OrtTensor> = {};
    for (const [name, t] of Object.entries(feeds)) {
      if (!s.inputNames.includes(name)) continue; // e.g. an optional context the graph does not take
      inputs[name] = 'ids' in t ? new this.ort.Tensor('int64', t.ids, t.shape) : new this.ort.Tensor('float32', t.data, t.shape);
    }
    for (const n of s.inputNames) if (!(n in inputs)) throw new XpsrError('ERR_INVALID_ARGUMENT', `${this.file}: input '${n}' is missing`);
    let out: Record<string, OrtTensor>;
    try {
      out = await s.run(inputs);
    } catch (e) {
      throw new XpsrError('ERR_INVALID_ARGUMENT', `onnxruntime failed on ${this.file}: ${(e as Error).message}`);
    }
    const r: Record<string, Tensor> = {};
    for (const [name, t] of Object.entries(out)) r[name] = { shape: [...t.dims], data: t.data as Float32Array };
    return r;
  }

  async release(): Promise<void> {
    const s = this.session;
    this.session = undefined;
    await s?.release();
  }
}
