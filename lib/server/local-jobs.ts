/**
 * In-process JobQueue: a bounded FIFO in front of a DevicePool (one XPSR per device, one batch of jobs per
 * device at a time, a batch goes to the first free device; a batch is one job unless `maxBatch` > 1). Jobs are plain records; finished ones are kept for a
 * TTL under a byte budget, so memory stays bounded however long the server runs.
 */
import { randomUUID } from 'node:crypto';
import { XpsrError } from '../errors.js';
import type { XpsrCaptioner } from '../captioners/types.js';
import type { UpscaleResult } from '../xpsr.js';
import type { DevicePool, DeviceSlot } from './devices.js';
import {
  CONTENT_TYPES,
  isTerminal,
  progressFraction,
  type DrainSummary,
  type JobError,
  type JobEvent,
  type JobQueue,
  type JobRequest,
  type JobResult,
  type JobState,
  type JobStatus,
  type QueueStats,
  type SubmitOptions,
} from './jobs.js';
import { ERR_DRAINING, ERR_NOT_READY, ERR_QUEUE_FULL, ERR_SHUTDOWN, ERR_TIMEOUT } from './errors.js';

export interface LocalJobQueueOptions {
  /** Most jobs waiting for a device (running ones not counted). */
  maxQueue: number;
  /** A running job is stopped (failed, ERR_TIMEOUT) after this long. */
  jobTimeoutMs: number;
  /** Finished jobs and their results are forgotten after this long. */
  resultTtlMs: number;
  /** Upper bound of the bytes of kept results; the oldest finished jobs are forgotten first. */
  maxResultBytes: number;
  /** Upper bound of finished job records kept (results or not). */
  maxFinishedJobs: number;
  /** Passed to every upscale call (the server's input pixel limit). */
  maxInputPixels: number;
  /** Captioner for jobs without captions (else the engine's own, if it was loaded with one). */
  captioner?: XpsrCaptioner;
  /** Metrics and logging hooks. */
  observer?: JobObserver;
  /**
   * Most jobs a free device takes at once (default 1). With more, the device's XPSR instance runs the
   * jobs of one processed size as one batch (lib/batch) and the other sizes one after another.
   */
  maxBatch?: number;
  /** How long the oldest waiting job waits for others to fill a batch when a device is free (ms, default 0). */
  batchDelayMs?: number;
}

export interface JobObserver {
  started?(status: JobStatus, waitMs: number): void;
  finished?(status: JobStatus, timingsMs: Record<string, number> | undefined): void;
  /** Unexpected (uncoded) failures, for the server log. */
  internalError?(id: string, error: unknown): void;
}

interface Job {
  id: string;
  request: JobRequest | undefined; // dropped once the job starts finishing, to free the input bytes
  ephemeral: boolean;
  state: JobState;
  stage: string | null;
  step: number;
  total: number;
  device: string | null;
  createdAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  expiresAt: number | null;
  error: JobError | null;
  result: JobResult | null;
  controller: AbortController;
  /** Why the running job was asked to stop: the code and message it ends with. */
  stopReason: JobError | null;
  listeners: Set<(e: JobEvent) => void>;
  settled: Promise<void>;
  settle: () => void;
  expiryTimer: NodeJS.Timeout | null;
  /** The per-job timeout while running. */
  timer: NodeJS.Timeout | null;
}

export class LocalJobQueue implements JobQueue {
  readonly #pool: DevicePool;
  readonly #o: LocalJobQueueOptions;
  readonly #jobs = new Map<string, Job>();
  /** Waiting jobs in arrival order. */
  readonly #queue: Job[] = [];
  /** Finished jobs in the order they finished (oldest first), for eviction. */
  readonly #finished = new Set<Job>();
  #storedBytes = 0;
  #running = 0;
  #accepting = true;
  /** Moving average of a job's run time (ms), for Retry-After. */
  #avgRunMs = 0;
  #idleWaiters: (() => void)[] = [];
  /** Dispatches again once the oldest job's batch delay is over. */
  #batchTimer: NodeJS.Timeout | null = null;

  constructor(pool: DevicePool, options: LocalJobQueueOptions) {
    this.#pool = pool;
    this.#o = options;
    pool.onChange(() => this.#dispatch());
  }

  async submit(request: JobRequest, options: SubmitOptions = {}): Promise<JobStatus> {
    if (!this.#accepting) throw new XpsrError(ERR_DRAINING, 'the server is shutting down and accepts no new jobs');
    if (!this.#pool.slots.some((s) => s.usable)) {
      const failed = this.#pool.slots.find((s) => s.error);
      throw new XpsrError(
        ERR_NOT_READY,
        failed ? `device ${failed.name} is not usable: ${failed.error!.message}` : 'the server is still loading the model weights',
      );
    }
    if (this.#queue.length >= this.#o.maxQueue) {
      const retryAfterSeconds = this.retryAfterSeconds();
      throw new XpsrError(ERR_QUEUE_FULL, `the queue is full (${this.#o.maxQueue} jobs waiting); retry in about ${retryAfterSeconds} s`, {
        retryAfterSeconds,
      });
    }
    let settle!: () => void;
    const settled = new Promise<void>((r) => (settle = r));
    const job: Job = {
      id: randomUUID(),
      request,
      ephemeral: !!options.ephemeral,
      state: 'queued',
      stage: null,
      step: 0,
      total: 0,
      device: null,
      createdAt: Date.now(),
      startedAt: null,
      finishedAt: null,
      expiresAt: null,
      error: null,
      result: null,
      controller: new AbortController(),
      stopReason: null,
      listeners: new Set(),
      settled,
      settle,
      expiryTimer: null,
      timer: null,
    };
    this.#jobs.set(job.id, job);
    this.#queue.push(job);
    const status = this.#status(job);
    queueMicrotask(() => this.#dispatch());
    return status;
  }

  async get(id: string): Promise<JobStatus | undefined> {
    const job = this.#jobs.get(id);
    return job && this.#status(job);
  }

  async result(id: string): Promise<JobResult | undefined> {
    return this.#jobs.get(id)?.result ?? undefined;
  }

  async release(id: string): Promise<void> {
    const job = this.#jobs.get(id);
    if (job && isTerminal(job.state)) this.#forget(job);
  }

  async cancel(id: string, code = 'ERR_CANCELLED', message = 'cancelled by request'): Promise<JobStatus | undefined> {
    const job = this.#jobs.get(id);
    if (!job) return undefined;
    if (job.state === 'queued') {
      this.#queue.splice(this.#queue.indexOf(job), 1);
      this.#finish(job, 'cancelled', { code, message });
      this.#notifyIfIdle();
    } else if (job.state === 'running' && !job.stopReason) {
      job.stopReason = { code, message };
      job.controller.abort();
    }
    return this.#status(job);
  }

  subscribe(id: string, listener: (e: JobEvent) => void): (() => void) | undefined {
    const job = this.#jobs.get(id);
    if (!job) return undefined;
    if (isTerminal(job.state)) return () => {};
    job.listeners.add(listener);
    return () => job.listeners.delete(listener);
  }

  async settled(id: string): Promise<JobStatus | undefined> {
    const job = this.#jobs.get(id);
    if (!job) return undefined;
    await job.settled;
    return this.#status(job);
  }

  stats(): QueueStats {
    return {
      queued: this.#queue.length,
      running: this.#running,
      stored: this.#finished.size,
      storedBytes: this.#storedBytes,
      accepting: this.#accepting,
      ready: this.#pool.ready,
      devices: this.#pool.slots.map((s) => s.status()),
    };
  }

  retryAfterSeconds(): number {
    const devices = Math.max(1, this.#pool.slots.filter((s) => s.usable).length);
    const perJob = this.#avgRunMs || 1000;
    return Math.min(3600, Math.max(1, Math.ceil((perJob * Math.ceil((this.#queue.length + 1) / devices)) / 1000)));
  }

  async drain(timeoutMs: number): Promise<DrainSummary> {
    this.#accepting = false;
    const counts = { done: 0, failed: 0, cancelled: 0 };
    const pending = [...this.#jobs.values()].filter((j) => !isTerminal(j.state));
    for (const j of pending) void j.settled.then(() => counts[j.state as keyof typeof counts]++);
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      this.#idle().then(() => false),
      new Promise<boolean>((r) => (timer = setTimeout(() => r(true), Math.max(0, timeoutMs)))),
    ]);
    clearTimeout(timer);
    if (timedOut) {
      const msg = `cancelled: the server shut down before the job finished (drain timeout ${(timeoutMs / 1000).toFixed(1)} s)`;
      for (const j of [...this.#queue]) await this.cancel(j.id, ERR_SHUTDOWN, msg);
      for (const j of pending) if (j.state === 'running') await this.cancel(j.id, ERR_SHUTDOWN, msg);
      await this.#idle(); // running jobs stop between steps
    }
    await Promise.all(pending.map((j) => j.settled));
    return { ...counts, timedOut };
  }

  async close(): Promise<void> {
    this.#accepting = false;
    for (const j of [...this.#jobs.values()]) this.#forget(j);
    if (this.#batchTimer) clearTimeout(this.#batchTimer);
    await this.#pool.dispose();
  }

  // --- internals -------------------------------------------------------------------------------

  /**
   * The one place that decides what a free device runs next: the oldest waiting jobs, up to `maxBatch`.
   * While fewer are waiting and the oldest has waited less than `batchDelayMs`, nothing yet (a timer
   * dispatches again when the delay is over). The sizes are known only once the images are decoded, so
   * the device's XPSR instance does the grouping by size.
   */
  #takeNext(_slot: DeviceSlot): Job[] {
    const max = this.#o.maxBatch ?? 1;
    if (max > 1 && this.#queue.length < max) {
      const wait = this.#queue[0].createdAt + (this.#o.batchDelayMs ?? 0) - Date.now();
      if (wait > 0 && this.#accepting) {
        this.#batchTimer ??= setTimeout(() => {
          this.#batchTimer = null;
          this.#dispatch();
        }, wait);
        return [];
      }
    }
    return this.#queue.splice(0, max);
  }

  #dispatch(): void {
    for (const slot of this.#pool.slots) {
      if (!slot.usable || slot.busy || this.#queue.length === 0) continue;
      const batch = this.#takeNext(slot);
      if (batch.length === 0) break;
      slot.busy = true;
      this.#running += batch.length;
      void this.#runBatch(slot, batch);
    }
  }

  /**
   * Runs a batch on a device. The device is held for the engine work only: encoding the output image
   * (sharp, on its own threads) overlaps with the device's next job.
   */
  async #runBatch(slot: DeviceSlot, batch: Job[]): Promise<void> {
    const deliveries: Promise<void>[] = [];
    // the jobs of a batch are submitted together: the instance's batcher (set below) groups them by size
    if (batch.length > 1) slot.xpsr!.setBatching({ maxBatch: batch.length, maxDelayMs: 0 });
    try {
      await Promise.all(
        batch.map(async (job) => {
          const out = await this.#compute(slot, job);
          if (out) deliveries.push(this.#deliver(job, out));
        }),
      );
    } finally {
      slot.busy = false;
      this.#dispatch();
    }
    await Promise.all(deliveries);
    this.#running -= batch.length;
    this.#notifyIfIdle();
  }

  /** The engine part of a job; undefined when it failed or was stopped (the job is then finished). */
  async #compute(slot: DeviceSlot, job: Job): Promise<UpscaleResult | undefined> {
    job.state = 'running';
    job.startedAt = Date.now();
    job.device = slot.name;
    slot.jobsRun++;
    this.#o.observer?.started?.(this.#status(job), job.startedAt - job.createdAt);
    this.#emit(job, 'state');
    job.timer = setTimeout(() => {
      if (!job.stopReason) {
        job.stopReason = {
          code: ERR_TIMEOUT,
          message: `the job ran longer than the per-job timeout (${(this.#o.jobTimeoutMs / 1000).toFixed(1)} s)`,
        };
        job.controller.abort();
      }
    }, this.#o.jobTimeoutMs);
    const request = job.request!;
    try {
      return await slot.xpsr!.upscale(request.image, {
        ...request.options,
        maxInputPixels: this.#o.maxInputPixels,
        ...(this.#o.captioner ? { captioner: this.#o.captioner } : {}),
        signal: job.controller.signal,
        onProgress: (e) => {
          job.stage = e.stage;
          job.step = e.step;
          job.total = e.total;
          this.#emit(job, 'progress');
        },
      });
    } catch (e) {
      this.#fail(job, e, slot);
      return undefined;
    }
  }

  /** Encodes the output in the requested format and finishes the job. */
  async #deliver(job: Job, out: UpscaleResult): Promise<void> {
    const format = job.request!.format;
    try {
      const data = await out.toBuffer(format);
      if (job.stopReason) throw new XpsrError('ERR_CANCELLED', 'cancelled'); // asked to stop while encoding
      const runMs = Date.now() - job.startedAt!;
      this.#avgRunMs = this.#avgRunMs ? 0.8 * this.#avgRunMs + 0.2 * runMs : runMs;
      job.result = {
        data,
        format,
        contentType: CONTENT_TYPES[format],
        bytes: data.length,
        width: out.width,
        height: out.height,
        seed: out.seed,
        prompts: out.prompts,
        timingsMs: { ...out.timingsMs },
        batchSize: out.batchSize,
      };
      this.#finish(job, 'done', null);
    } catch (e) {
      this.#fail(job, e);
    }
  }

  /** Finishes a job that threw: stopped on request or timeout, a coded library error, or a bug. */
  #fail(job: Job, e: unknown, slot?: DeviceSlot): void {
    const err = e as { code?: unknown; message?: unknown };
    const code = typeof err?.code === 'string' ? err.code : 'ERR_INTERNAL';
    if (job.stopReason && code === 'ERR_CANCELLED') {
      this.#finish(job, job.stopReason.code === ERR_TIMEOUT ? 'failed' : 'cancelled', job.stopReason);
    } else if (typeof err?.code !== 'string') {
      this.#o.observer?.internalError?.(job.id, e);
      this.#finish(job, 'failed', { code, message: 'internal error (details are in the server log)' });
    } else {
      if (code === 'ERR_DEVICE_UNAVAILABLE' && slot) this.#pool.markUnusable(slot, { code, message: String(err.message) });
      this.#finish(job, 'failed', { code, message: String(err.message) });
    }
  }

  #finish(job: Job, state: JobState, error: JobError | null): void {
    if (job.timer) clearTimeout(job.timer);
    job.state = state;
    job.error = error;
    job.finishedAt = Date.now();
    job.request = undefined;
    job.expiresAt = job.finishedAt + this.#o.resultTtlMs;
    this.#finished.add(job);
    this.#storedBytes += job.result?.bytes ?? 0;
    job.expiryTimer = setTimeout(() => this.#forget(job), this.#o.resultTtlMs);
    job.expiryTimer.unref();
    this.#o.observer?.finished?.(this.#status(job), job.result?.timingsMs);
    this.#emit(job, 'state');
    job.listeners.clear();
    job.settle();
    this.#evict(job);
  }

  /** Keeps the kept results under the byte and count budgets (oldest first; never the job just finished). */
  #evict(keep: Job): void {
    for (const j of this.#finished) {
      if (this.#storedBytes <= this.#o.maxResultBytes && this.#finished.size <= this.#o.maxFinishedJobs) break;
      if (j !== keep) this.#forget(j);
    }
  }

  #forget(job: Job): void {
    if (!isTerminal(job.state)) return;
    if (job.expiryTimer) clearTimeout(job.expiryTimer);
    if (this.#finished.delete(job)) this.#storedBytes -= job.result?.bytes ?? 0;
    job.result = null;
    this.#jobs.delete(job.id);
  }

  #emit(job: Job, type: JobEvent['type']): void {
    if (job.listeners.size === 0) return;
    const status = this.#status(job);
    for (const l of job.listeners) {
      try {
        l({ type, status });
      } catch (e) {
        this.#o.observer?.internalError?.(job.id, e);
      }
    }
  }

  #status(job: Job): JobStatus {
    const iso = (t: number | null) => (t === null ? null : new Date(t).toISOString());
    const r = job.result;
    return {
      id: job.id,
      state: job.state,
      position: job.state === 'queued' ? this.#queue.indexOf(job) : null,
      stage: job.stage,
      step: job.step,
      total: job.total,
      progress: progressFraction(job.state, job.stage, job.step, job.total),
      device: job.device,
      createdAt: iso(job.createdAt)!,
      startedAt: iso(job.startedAt),
      finishedAt: iso(job.finishedAt),
      expiresAt: iso(job.expiresAt),
      error: job.error,
      result: r && {
        format: r.format,
        contentType: r.contentType,
        bytes: r.bytes,
        width: r.width,
        height: r.height,
        seed: r.seed,
        prompts: r.prompts,
        timingsMs: r.timingsMs,
        ...(r.batchSize === undefined ? {} : { batchSize: r.batchSize }),
      },
    };
  }

  #idle(): Promise<void> {
    if (this.#queue.length === 0 && this.#running === 0) return Promise.resolve();
    return new Promise((r) => this.#idleWaiters.push(r));
  }

  #notifyIfIdle(): void {
    if (this.#queue.length !== 0 || this.#running !== 0) return;
    for (const w of this.#idleWaiters.splice(0)) w();
  }
}
