/**
 * What the server (RedisJobQueue) and the workers (createWorker) agree on: the Redis key names, the data a
 * queued job carries (references to blobs, options and captions; never pixels), the progress a worker
 * reports, and the final record that settles a job exactly once.
 *
 * Key layout for queue `q` (our keys use the `xpsr:` prefix; BullMQ's own keys use `bull:`):
 *   xpsr:q:blob:in:<id>     the encoded input image (Redis blob store; or a file in the blob dir)
 *   xpsr:q:blob:out:<id>    the encoded result
 *   xpsr:q:final:<id>       the final record (JSON), written once with SET NX: the first writer wins
 *   xpsr:q:cancel:<id>      a cancel request (JSON { code, message }), also published on xpsr:q:cancel
 *   xpsr:q:worker:<name>    a worker device's heartbeat (JSON DeviceStatus + facts), expires unless renewed
 *   xpsr:q:workers          sorted set of worker names by last heartbeat
 */
import type { JobError, JobOptions, JobResultInfo, JobState, OutputFormat } from '../server/jobs.js';

export const DEFAULT_QUEUE = 'xpsr';
/** BullMQ job name of an upscale job. */
export const JOB_NAME = 'upscale';

export class QueueKeys {
  readonly base: string;

  constructor(readonly queue: string) {
    if (!/^[\w.-]{1,64}$/.test(queue)) throw new Error(`queue name '${queue}' must be 1-64 letters, digits, '_', '.' or '-'`);
    this.base = `xpsr:${queue}`;
  }

  inputBlob(id: string): string {
    return `in:${id}`;
  }
  outputBlob(id: string): string {
    return `out:${id}`;
  }
  /** The Redis key of a blob in the Redis blob store. */
  blob(name: string): string {
    return `${this.base}:blob:${name}`;
  }
  final(id: string): string {
    return `${this.base}:final:${id}`;
  }
  cancel(id: string): string {
    return `${this.base}:cancel:${id}`;
  }
  get cancelChannel(): string {
    return `${this.base}:cancel`;
  }
  worker(name: string): string {
    return `${this.base}:worker:${name}`;
  }
  get workers(): string {
    return `${this.base}:workers`;
  }
}

/** Where a blob lives: the store kind (server and workers must be configured alike) and its name. */
export interface BlobRef {
  store: 'redis' | 'dir';
  name: string;
  bytes: number;
}

/** The data of a BullMQ upscale job: references and plain options only. */
export interface QueueJobData {
  input: BlobRef;
  /** Validated library options; the seed is always set (chosen at submission when the client gave none), so a retry reproduces the same image. */
  options: JobOptions & { seed: number };
  format: OutputFormat;
  /** Largest input (width x height) the server accepted; the library checks it again. */
  maxInputPixels: number;
  /** ms since the epoch. */
  createdAt: number;
  /** A running attempt is stopped after this long (failed, ERR_TIMEOUT; not retried). */
  timeoutMs: number;
  /** How long the final record and the result are kept. */
  resultTtlMs: number;
  /** A synchronous request (the server releases the result once sent). */
  ephemeral: boolean;
}

/** What a worker reports while a job runs (BullMQ job progress). */
export interface QueueProgress {
  stage: string | null;
  step: number;
  total: number;
  device: string;
  worker: string;
  startedAt: number;
}

/** The one record that ends a job: its final state, error or result. Written with SET NX by whoever finishes it. */
export interface FinalRecord {
  id: string;
  state: Extract<JobState, 'done' | 'failed' | 'cancelled'>;
  error: JobError | null;
  result: (JobResultInfo & { blob: BlobRef }) | null;
  device: string | null;
  worker: string | null;
  createdAt: number;
  startedAt: number | null;
  finishedAt: number;
  expiresAt: number;
  /** Attempts started (1 unless a worker died or a transient failure was retried). */
  attempts: number;
}

/** A cancel request as stored under the cancel key and published on the channel. */
export interface CancelRequest {
  id: string;
  code: string;
  message: string;
}

/** Failures worth another attempt (on another worker, after a backoff): the device, not the input, was the problem. */
export const TRANSIENT_CODES: readonly string[] = ['ERR_DEVICE_UNAVAILABLE', 'ERR_OUT_OF_MEMORY'];

/** Error codes of the queue layer itself. */
export const ERR_INPUT_EXPIRED = 'ERR_INPUT_EXPIRED';
export const ERR_BLOB_TOO_LARGE = 'ERR_BLOB_TOO_LARGE';
export const ERR_BLOB_STORE_MISMATCH = 'ERR_BLOB_STORE_MISMATCH';
export const ERR_WORKER_LOST = 'ERR_WORKER_LOST';
export const ERR_REDIS_UNAVAILABLE = 'ERR_REDIS_UNAVAILABLE';
