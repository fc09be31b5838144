/**
 * The job model shared by the HTTP layer and whatever executes jobs (design.md, "From library to
 * service"): a job is queued -> running -> done | failed | cancelled, with step/total progress, an
 * error code from the library, and a result kept for a TTL.
 *
 * The HTTP routes only talk to the `JobQueue` interface below. `LocalJobQueue` (local-jobs.ts) runs
 * jobs in this process on one XPSR engine per device; a Redis/BullMQ implementation for remote GPU
 * workers can implement the same interface (every call is async and every value is plain data, so a
 * job request, status or result can cross a process boundary as JSON + one blob).
 */
import type { UpscaleOptions } from '../options.js';
import type { Prompts } from '../pipeline/prompts.js';

export type JobState = 'queued' | 'running' | 'done' | 'failed' | 'cancelled';
export const TERMINAL_STATES: readonly JobState[] = ['done', 'failed', 'cancelled'];
export const isTerminal = (s: JobState): boolean => TERMINAL_STATES.includes(s);

export type OutputFormat = 'png' | 'jpeg' | 'webp' | 'tiff';
export const OUTPUT_FORMATS: readonly OutputFormat[] = ['png', 'jpeg', 'webp', 'tiff'];
export const CONTENT_TYPES: Record<OutputFormat, string> = {
  png: 'image/png',
  jpeg: 'image/jpeg',
  webp: 'image/webp',
  tiff: 'image/tiff',
};

/** The library's upscale options that a request may set (data only: no signal, callbacks or objects). */
export type JobOptions = Omit<UpscaleOptions, 'signal' | 'onProgress' | 'captioner' | 'noise' | 'maxInputPixels' | 'instructions'>;

/** Everything a job needs to run: the encoded input image, validated options and the output format. */
export interface JobRequest {
  image: Buffer;
  options: JobOptions;
  format: OutputFormat;
}

export interface JobError {
  code: string;
  message: string;
}

/** Facts about a finished job's output (the bytes come from `JobQueue.result`). */
export interface JobResultInfo {
  format: OutputFormat;
  contentType: string;
  bytes: number;
  width: number;
  height: number;
  seed: number | null; // null only when the caller supplied its own noise (never through the server)
  prompts: Prompts;
  /** Wall time per stage in ms (caption, preprocess, text, encode, denoise, decode, colorfix, total...). */
  timingsMs: Record<string, number>;
  /** Images that shared the job's denoising passes (1 = alone); set by the local queue. */
  batchSize?: number;
}

export interface JobResult extends JobResultInfo {
  data: Buffer;
}

export interface JobStatus {
  id: string;
  state: JobState;
  /** Jobs ahead of this one in the queue (0 = next to run); null unless queued. */
  position: number | null;
  /** Current stage ('text', 'encode', 'denoise', 'decode', 'colorfix') and its step/total. */
  stage: string | null;
  step: number;
  total: number;
  /** Rough overall fraction done, 0..1 (for progress bars). */
  progress: number;
  device: string | null;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  /** When a finished job (and its result) is forgotten. */
  expiresAt: string | null;
  error: JobError | null;
  result: JobResultInfo | null;
}

/** What subscribers receive: every progress step and every state change, with the full status. */
export interface JobEvent {
  type: 'progress' | 'state';
  status: JobStatus;
}

export interface SubmitOptions {
  /**
   * A synchronous request: its result is handed to the waiting caller and then dropped (`release`),
   * not kept for the TTL.
   */
  ephemeral?: boolean;
}

export interface DeviceStatus {
  name: string;
  state: 'loading' | 'ready' | 'failed' | 'unusable';
  busy: boolean;
  jobsRun: number;
  error: JobError | null;
}

export interface QueueStats {
  queued: number;
  running: number;
  /** Finished jobs still held (until their TTL) and the bytes of their results. */
  stored: number;
  storedBytes: number;
  accepting: boolean;
  ready: boolean;
  devices: DeviceStatus[];
}

export interface DrainSummary {
  /** Jobs that reached each final state while draining. */
  done: number;
  failed: number;
  cancelled: number;
  timedOut: boolean;
}

export interface JobQueue {
  /**
   * Accepts a job (queued) or refuses it with an XpsrError: ERR_QUEUE_FULL (details.retryAfterSeconds),
   * ERR_DRAINING, ERR_NOT_READY.
   */
  submit(request: JobRequest, options?: SubmitOptions): Promise<JobStatus>;
  get(id: string): Promise<JobStatus | undefined>;
  /** The output of a done job, while it is kept. */
  result(id: string): Promise<JobResult | undefined>;
  /** Forgets a finished job now (a synchronous request after its response). */
  release(id: string): Promise<void>;
  /**
   * Cancels a queued job at once or asks a running one to stop (between steps); the final status
   * records `code` (ERR_CANCELLED by default). Undefined for unknown ids; finished jobs are unchanged.
   */
  cancel(id: string, code?: string, message?: string): Promise<JobStatus | undefined>;
  /** Live events of one job; returns the unsubscribe function, or undefined for unknown ids. */
  subscribe(id: string, listener: (e: JobEvent) => void): (() => void) | undefined;
  /** Resolves with the final status (undefined for unknown ids). */
  settled(id: string): Promise<JobStatus | undefined>;
  /** Synchronous (probes and metrics read it often): a remote implementation serves a cached view. */
  stats(): QueueStats;
  /** Seconds a refused client should wait before retrying (from recent job durations and the queue). */
  retryAfterSeconds(): number;
  /**
   * Stops accepting, lets queued and running jobs finish within `timeoutMs`, then cancels what is left
   * with ERR_SHUTDOWN. Every accepted job ends in a final state.
   */
  drain(timeoutMs: number): Promise<DrainSummary>;
  /** Frees the engines it owns. Call after drain. */
  close(): Promise<void>;
}

/** Overall fraction for a progress bar: denoising dominates; the other stages are small fixed slices. */
export function progressFraction(state: JobState, stage: string | null, step: number, total: number): number {
  if (state === 'done') return 1;
  if (state === 'queued' || !stage) return 0;
  switch (stage) {
    case 'text':
      return 0.02;
    case 'encode':
      return 0.05;
    case 'denoise':
      return 0.05 + 0.85 * (total > 0 ? step / total : 0);
    case 'decode':
      return 0.92;
    default:
      return 0.97;
  }
}
