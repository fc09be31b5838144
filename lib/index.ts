/**
 * xpsr-native: XPSR diffusion super-resolution in Node.js (C++/CUDA engine, no Python).
 * Public exports only; see README.md for the guide.
 */
export { XPSR, type UpscaleResult, type UpscaleOutcome, type UpscaleManyOptions, type WriteOptions } from './xpsr.js';
export type { LoadOptions, UpscaleOptions } from './options.js';
export type { BatchingOptions } from './batch/options.js';
export type { BatcherStats } from './batch/batcher.js';
export { XpsrError, ERROR_CODES, type XpsrErrorCode } from './errors.js';
export { readImageMetadata } from './image/io.js';
export {
  Engine,
  Model,
  ClipTextEncoder,
  Vae,
  UNet,
  ControlNet,
  type Tensor,
  type EngineOptions,
  type RunOptions,
  type VaeTileRunOptions,
  type ModelKind,
  type ModelInfo,
  type RunStats,
  type PlanInfo,
  type Intermediates,
  type ControlNetInputs,
  type StepArgs,
  type StepResult,
  type StepShape,
} from './engine/engine.js';
export { ClipTokenizer } from './tokenizer/index.js';
export { createScheduler, SCHEDULER_NAMES, type Scheduler } from './schedulers/index.js';
export { NoiseSource, ReplayNoise, type NoiseProvider } from './noise.js';
export { colorFix, type ColorFixKind } from './colorfix.js';
export type { ProgressEvent, Stage } from './pipeline/core.js';
export { OFFICIAL_ADDED_PROMPT, OFFICIAL_NEGATIVE_PROMPT, LOWLEVEL_NEGATIVE_PROMPT, type Prompts } from './pipeline/prompts.js';
export { runParity, formatLine, type ParityReport, type ParityLine } from './parity/index.js';
export * from './captioners/index.js';
export { loadNative } from './native.js';
export { createServer, type ServerOptions, type XpsrServer, type JobQueue, type JobStatus, type JobState } from './server/index.js';
export { createWorker, type WorkerOptions, type XpsrWorker, type WorkerEngine } from './queue/index.js';
