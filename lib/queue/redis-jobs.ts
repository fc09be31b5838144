/**
 * RedisJobQueue: the JobQueue of a stateless server in front of remote GPU workers (`xpsr serve --redis`).
 * Same job model and API as the local queue; the work happens in `xpsr worker` processes on any machine.
 *
 * - submit: the input image goes to the blob store (TTL), the job (references, options, captions, a fixed
 *   seed) to the BullMQ queue with retries and backoff for transient failures.
 * - status: a finished job's final record (written once, by whoever ended it); else the BullMQ job's
 *   state, queue position and progress.
 * - events: BullMQ QueueEvents (a Redis stream, read from the last seen id, so nothing is missed across a
 *   Redis restart) feed subscribers; a poll of the final records every `pollMs` backs them up.
 * - cancel: a queued job is removed and settled here; a running one gets a cancel request (key + pub/sub)
 *   that its worker turns into an AbortSignal.
 * - drain: a server stopping waits for its synchronous requests only; queued jobs belong to the shared
 *   queue and keep running on the workers (any server answers for them).
 */
import { randomInt, randomUUID } from 'node:crypto';
import { Queue, QueueEvents } from 'bullmq';
import type { Redis } from 'ioredis';
import { XpsrError } from '../errors.js';
import {
  isTerminal,
  progressFraction,
  type DeviceStatus,
  type DrainSummary,
  type JobEvent,
  type JobQueue,
  type JobRequest,
  type JobResult,
  type JobStatus,
  type QueueStats,
  type SubmitOptions,
} from '../server/jobs.js';
import { ERR_DRAINING, ERR_NOT_READY, ERR_QUEUE_FULL, ERR_SHUTDOWN } from '../server/errors.js';
import type { JobObserver } from '../server/local-jobs.js';
import { createBlobStore, type BlobStore, type BlobStoreOptions } from './blobs.js';
import { requestCancel } from './cancel.js';
import {
  DEFAULT_QUEUE,
  ERR_REDIS_UNAVAILABLE,
  ERR_WORKER_LOST,
  JOB_NAME,
  QueueKeys,
  type BlobRef,
  type FinalRecord,
  type QueueJobData,
  type QueueProgress,
} from './protocol.js';
import { parseFailure, readFinal, settle } from './records.js';
import { connectRedis, redisWarnings, waitReady } from './redis.js';

export interface RedisJobQueueOptions extends BlobStoreOptions {
  /** Redis URL, e.g. redis://redis.internal:6379. */
  redis: string;
  /** Queue name (default 'xpsr'). */
  queue?: string;
  maxQueue: number;
  jobTimeoutMs: number;
  resultTtlMs: number;
  maxInputPixels: number;
  /** How long an input waits for a worker before it expires (the job then fails with ERR_INPUT_EXPIRED). Default 1 h. */
  inputTtlMs?: number;
  /** Attempts per job for transient failures (device lost, out of memory). Default 3. */
  attempts?: number;
  /** First retry delay; doubles each attempt. Default 1 s. */
  backoffMs?: number;
  /** Refresh of the cached queue view behind stats() (probes, metrics). Default 1 s. */
  statsIntervalMs?: number;
  /** Fallback poll of watched jobs' final records. Default 500 ms. */
  pollMs?: number;
  observer?: JobObserver;
  onNotice?: (message: string) => void;
}

interface Watch {
  listeners: Set<(e: JobEvent) => void>;
  waiters: ((s: JobStatus | undefined) => void)[];
  last: JobStatus | undefined;
  /** Submitted by this server (its metrics observe it; a synchronous one is waited for by drain). */
  tracked: boolean;
  ephemeral: boolean;
  startedSeen: boolean;
  /** Serialises refreshes so events are applied in order. */
  chain: Promise<void>;
}

const iso = (t: number | null | undefined) => (t === null || t === undefined ? null : new Date(t).toISOString());

export class RedisJobQueue implements JobQueue {
  readonly keys: QueueKeys;
  readonly queue: Queue<QueueJobData, FinalRecord>;
  readonly blobs: BlobStore;
  /** Warnings about the Redis configuration found at start (also sent to onNotice). */
  warnings: string[] = [];
  readonly #o: RedisJobQueueOptions;
  readonly #redis: Redis;
  readonly #eventsRedis: Redis;
  readonly #events: QueueEvents;
  readonly #watches = new Map<string, Watch>();
  /** Synchronous requests of this server until their route released them (the response is sent by then). */
  readonly #inFlight = new Map<string, () => void>();
  readonly #inFlightDone = new Map<string, Promise<void>>();
  #view: QueueStats;
  #accepting = true;
  #avgRunMs = 0;
  #statsTimer: NodeJS.Timeout | undefined;
  #pollTimer: NodeJS.Timeout | undefined;
  #sweepTimer: NodeJS.Timeout | undefined;
  #ticks = 0;
  #closed = false;

  private constructor(o: RedisJobQueueOptions) {
    this.#o = o;
    this.keys = new QueueKeys(o.queue ?? DEFAULT_QUEUE);
    this.#redis = connectRedis(o.redis, `xpsr-server:${process.pid}`);
    this.#eventsRedis = connectRedis(o.redis, `xpsr-server:${process.pid}:events`);
    this.blobs = createBlobStore(this.#redis, this.keys, o);
    this.queue = new Queue<QueueJobData, FinalRecord>(this.keys.queue, { connection: this.#redis });
    this.queue.on('error', () => undefined); // connection errors while Redis restarts; ioredis reconnects
    this.#events = new QueueEvents(this.keys.queue, { connection: this.#eventsRedis, autorun: false });
    this.#events.on('error', () => undefined);
    this.#view = { queued: 0, running: 0, stored: 0, storedBytes: 0, accepting: true, ready: false, devices: [] };
  }

  /** Connects (ERR_REDIS_UNAVAILABLE after 10 s), reports Redis settings that risk jobs, and starts listening. */
  static async create(o: RedisJobQueueOptions): Promise<RedisJobQueue> {
    const q = new RedisJobQueue(o);
    try {
      await waitReady(q.#redis, 10_000);
    } catch {
      await q.close();
      throw new XpsrError(
        ERR_REDIS_UNAVAILABLE,
        `cannot reach Redis at ${o.redis.replace(/\/\/[^@/]*@/, '//***@')} (is it running? is the URL right?)`,
      );
    }
    q.warnings = await redisWarnings(q.#redis).catch(() => []);
    for (const w of q.warnings) (o.onNotice ?? ((m: string) => console.warn(m)))(`xpsr serve: warning: ${w}`);
    for (const name of ['active', 'progress', 'completed', 'failed', 'removed', 'waiting', 'delayed', 'stalled'] as const) {
      q.#events.on(name, (args: { jobId: string; data?: unknown }) => q.#onEvent(name, args.jobId, args.data));
    }
    void q.#events.run().catch(() => undefined);
    await q.#events.waitUntilReady();
    await q.#refreshView();
    q.#statsTimer = setInterval(() => void q.#refreshView(), o.statsIntervalMs ?? 1000);
    q.#statsTimer.unref();
    q.#pollTimer = setInterval(() => void q.#poll(), o.pollMs ?? 500);
    q.#pollTimer.unref();
    if (q.blobs.kind === 'dir') {
      // Redis expires its keys itself; files in a shared directory are deleted by the servers' and workers' sweeps.
      q.#sweepTimer = setInterval(() => void q.blobs.sweep().catch(() => undefined), 60_000);
      q.#sweepTimer.unref();
    }
    return q;
  }

  get redis(): Redis {
    return this.#redis;
  }

  async submit(request: JobRequest, options: SubmitOptions = {}): Promise<JobStatus> {
    if (!this.#accepting) throw new XpsrError(ERR_DRAINING, 'the server is shutting down and accepts no new jobs');
    if (this.#redis.status !== 'ready') throw new XpsrError(ERR_NOT_READY, "the queue's Redis is unreachable (reconnecting); retry shortly");
    const counts = await this.queue.getJobCounts('wait', 'delayed', 'prioritized');
    const waiting = counts.wait + counts.delayed + counts.prioritized;
    if (waiting >= this.#o.maxQueue) {
      const retryAfterSeconds = this.retryAfterSeconds();
      throw new XpsrError(ERR_QUEUE_FULL, `the queue is full (${this.#o.maxQueue} jobs waiting); retry in about ${retryAfterSeconds} s`, {
        retryAfterSeconds,
      });
    }
    const id = randomUUID();
    const createdAt = Date.now();
    const input = { store: this.blobs.kind, name: this.keys.inputBlob(id), bytes: request.image.length };
    try {
      await this.#enqueue(id, createdAt, input, request, !!options.ephemeral);
    } catch (e) {
      await this.blobs.delete(input.name).catch(() => undefined); // not accepted: nothing of it may stay
      if (e instanceof XpsrError) throw e;
      // E.g. a full Redis with noeviction ("OOM command not allowed"): the job was not accepted.
      throw new XpsrError(ERR_REDIS_UNAVAILABLE, `the queue's Redis did not take the job: ${(e as Error)?.message ?? String(e)}`);
    }
    if (options.ephemeral) this.#inFlightDone.set(id, new Promise((r) => this.#inFlight.set(id, r)));
    // Watched from now on (events before this point are covered by the first read of whoever waits).
    const w = this.#watch(id);
    w.tracked = true;
    w.ephemeral = !!options.ephemeral;
    const status = this.#queuedStatus(id, createdAt, waiting);
    w.last ??= status;
    return status;
  }

  async #enqueue(id: string, createdAt: number, input: BlobRef, request: JobRequest, ephemeral: boolean): Promise<void> {
    await this.blobs.put(input.name, request.image, this.#o.inputTtlMs ?? 3600_000);
    const data: QueueJobData = {
      input,
      // The seed is fixed here so that every attempt (after a worker died) computes the same image.
      options: { ...request.options, seed: request.options.seed ?? randomInt(2 ** 31) },
      format: request.format,
      maxInputPixels: this.#o.maxInputPixels,
      createdAt,
      timeoutMs: this.#o.jobTimeoutMs,
      resultTtlMs: this.#o.resultTtlMs,
      ephemeral,
    };
    await this.queue.add(JOB_NAME, data, {
      jobId: id,
      attempts: this.#o.attempts ?? 3,
      backoff: { type: 'exponential', delay: this.#o.backoffMs ?? 1000 },
      removeOnComplete: true, // the final record is the job's record from now on
      removeOnFail: { age: Math.ceil(this.#o.resultTtlMs / 1000), count: 10_000 },
    });
  }

  async get(id: string): Promise<JobStatus | undefined> {
    if (!/^[\w-]{1,64}$/.test(id)) return undefined;
    const final = await readFinal(this.#redis, this.keys, id);
    if (final) return this.#finalStatus(final);
    const job = await this.queue.getJob(id);
    const state = job ? await job.getState() : 'unknown';
    if (!job || state === 'unknown' || state === 'completed') {
      // It may have ended between the two reads (the final record is written before BullMQ removes the job).
      const now = await readFinal(this.#redis, this.keys, id);
      return now ? this.#finalStatus(now) : undefined;
    }
    const data = job.data;
    if (state === 'failed') {
      // Ended by BullMQ itself (e.g. its worker died more often than maxStalledCount): no final record.
      const finishedAt = job.finishedOn ?? Date.now();
      const expiresAt = finishedAt + data.resultTtlMs;
      if (expiresAt <= Date.now()) return undefined;
      const error = parseFailure(job.failedReason, /stalled/i.test(job.failedReason ?? '') ? ERR_WORKER_LOST : 'ERR_INTERNAL');
      if (error.code === ERR_WORKER_LOST) error.message = `the job's worker stopped responding too many times (${job.failedReason})`;
      return {
        ...this.#base(id, data.createdAt),
        state: 'failed',
        startedAt: iso(job.processedOn),
        finishedAt: iso(finishedAt),
        expiresAt: iso(expiresAt),
        error,
        progress: 0,
      };
    }
    if (state === 'active') {
      const p = (typeof job.progress === 'object' ? job.progress : null) as QueueProgress | null;
      // Before the worker's first progress report, BullMQ's record of the consumer (named after the device) tells where it runs.
      return this.#runningStatus(
        id,
        data.createdAt,
        p ?? { stage: null, step: 0, total: 0, device: job.processedBy ?? '', worker: '', startedAt: job.processedOn ?? Date.now() },
        job.processedOn,
      );
    }
    // waiting, delayed (a retry's backoff), prioritized, paused
    let position: number;
    const waitKey = this.queue.keys.wait;
    if (state === 'waiting') {
      const [len, pos] = await Promise.all([this.#redis.llen(waitKey), this.#redis.lpos(waitKey, id)]);
      position = pos === null ? len : Math.max(0, len - 1 - pos); // workers take from the tail
    } else {
      position = await this.#redis.llen(waitKey);
    }
    return this.#queuedStatus(id, data.createdAt, position);
  }

  async result(id: string): Promise<JobResult | undefined> {
    const final = await readFinal(this.#redis, this.keys, id);
    if (!final || final.state !== 'done' || !final.result) return undefined;
    const { blob, ...info } = final.result;
    const data = await this.blobs.get(blob.name);
    return data && { ...info, data };
  }

  async release(id: string): Promise<void> {
    try {
      const final = await readFinal(this.#redis, this.keys, id);
      if (!final) return;
      if (final.result) await this.blobs.delete(final.result.blob.name);
      await this.#redis.del(this.keys.final(id), this.keys.cancel(id));
      this.#watches.delete(id);
    } finally {
      this.#inFlight.get(id)?.();
      this.#inFlight.delete(id);
      this.#inFlightDone.delete(id);
    }
  }

  async cancel(id: string, code = 'ERR_CANCELLED', message = 'cancelled by request'): Promise<JobStatus | undefined> {
    const s = await this.get(id);
    if (!s || isTerminal(s.state)) return s;
    // Stored and published first: whoever runs the job now or takes it later sees it.
    await requestCancel(this.#redis, this.keys, { id, code, message }, (this.#o.inputTtlMs ?? 3600_000) + this.#o.jobTimeoutMs);
    if (s.state === 'queued' && (await this.queue.remove(id)) === 1) {
      // Removed before any worker took it: this server ends it.
      const now = Date.now();
      await settle(this.#redis, this.keys, {
        id,
        state: 'cancelled',
        error: { code, message },
        result: null,
        device: null,
        worker: null,
        createdAt: Date.parse(s.createdAt),
        startedAt: null,
        finishedAt: now,
        expiresAt: now + this.#o.resultTtlMs,
        attempts: 0,
      });
      await this.blobs.delete(this.keys.inputBlob(id));
      await this.#redis.del(this.keys.cancel(id));
      this.#refresh(id);
    }
    return (await this.get(id)) ?? s;
  }

  subscribe(id: string, listener: (e: JobEvent) => void): (() => void) | undefined {
    // Existence was checked by the caller (an async read); a job that turns out unknown ends the stream.
    const w = this.#watch(id);
    w.listeners.add(listener);
    this.#refresh(id);
    return () => {
      w.listeners.delete(listener);
      this.#unwatchIfIdle(id, w);
    };
  }

  async settled(id: string): Promise<JobStatus | undefined> {
    const s = await this.get(id);
    if (!s || isTerminal(s.state)) return s;
    const w = this.#watch(id);
    const p = new Promise<JobStatus | undefined>((r) => w.waiters.push(r));
    this.#refresh(id);
    return p;
  }

  stats(): QueueStats {
    return { ...this.#view, accepting: this.#accepting, ready: this.#view.ready && this.#redis.status === 'ready' };
  }

  retryAfterSeconds(): number {
    const workers = Math.max(1, this.#view.devices.filter((d) => d.state === 'ready').length);
    const perJob = this.#avgRunMs || 1000;
    return Math.min(3600, Math.max(1, Math.ceil((perJob * Math.ceil((this.#view.queued + 1) / workers)) / 1000)));
  }

  async drain(timeoutMs: number): Promise<DrainSummary> {
    this.#accepting = false;
    const counts = { done: 0, failed: 0, cancelled: 0 };
    // Synchronous requests wait on this server's connections: they finish (or are cancelled) here.
    // Queued jobs belong to the shared queue: the workers keep running them and any server answers for them.
    // A synchronous request is over when its route released it, i.e. after the response was written.
    const mine = [...this.#inFlightDone.keys()];
    const finals = mine.map(async (id) => {
      const s = await this.settled(id);
      if (s && isTerminal(s.state)) counts[s.state as keyof typeof counts]++;
      await this.#inFlightDone.get(id);
    });
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      Promise.all(finals).then(() => false),
      new Promise<boolean>((r) => (timer = setTimeout(() => r(true), Math.max(0, timeoutMs)))),
    ]);
    clearTimeout(timer);
    if (timedOut) {
      const msg = `cancelled: the server shut down before the job finished (drain timeout ${(timeoutMs / 1000).toFixed(1)} s)`;
      await Promise.all(mine.map((id) => this.cancel(id, ERR_SHUTDOWN, msg).catch(() => undefined)));
      // Cancels reach the workers within a second; do not wait forever for a worker that is gone.
      await Promise.race([Promise.all(finals), new Promise((r) => (timer = setTimeout(r, 15_000)))]);
      clearTimeout(timer);
    }
    return { ...counts, timedOut };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#accepting = false;
    clearInterval(this.#statsTimer);
    clearInterval(this.#pollTimer);
    clearInterval(this.#sweepTimer);
    for (const w of this.#watches.values()) for (const r of w.waiters.splice(0)) r(w.last);
    this.#watches.clear();
    for (const r of this.#inFlight.values()) r();
    this.#inFlight.clear();
    this.#inFlightDone.clear();
    await this.#events.close().catch(() => undefined);
    await this.queue.close().catch(() => undefined);
    for (const r of [this.#redis, this.#eventsRedis]) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([r.quit().catch(() => undefined), new Promise((res) => (timer = setTimeout(res, 1000)))]);
      clearTimeout(timer);
      r.disconnect();
    }
  }

  // --- statuses ---------------------------------------------------------------------------------

  #base(id: string, createdAt: number): JobStatus {
    return {
      id,
      state: 'queued',
      position: null,
      stage: null,
      step: 0,
      total: 0,
      progress: 0,
      device: null,
      createdAt: iso(createdAt)!,
      startedAt: null,
      finishedAt: null,
      expiresAt: null,
      error: null,
      result: null,
    };
  }

  #queuedStatus(id: string, createdAt: number, position: number): JobStatus {
    return { ...this.#base(id, createdAt), position };
  }

  #runningStatus(id: string, createdAt: number, p: QueueProgress | null, processedOn?: number): JobStatus {
    const stage = p?.stage ?? null;
    return {
      ...this.#base(id, createdAt),
      state: 'running',
      stage,
      step: p?.step ?? 0,
      total: p?.total ?? 0,
      progress: progressFraction('running', stage, p?.step ?? 0, p?.total ?? 0),
      device: p?.device || null,
      startedAt: iso(p?.startedAt ?? processedOn ?? Date.now()),
    };
  }

  #finalStatus(f: FinalRecord): JobStatus | undefined {
    if (f.expiresAt <= Date.now()) return undefined;
    const r = f.result;
    return {
      ...this.#base(f.id, f.createdAt),
      state: f.state,
      device: f.device,
      startedAt: iso(f.startedAt),
      finishedAt: iso(f.finishedAt),
      expiresAt: iso(f.expiresAt),
      error: f.error,
      progress: progressFraction(f.state, null, 0, 0),
      result: r && {
        format: r.format,
        contentType: r.contentType,
        bytes: r.bytes,
        width: r.width,
        height: r.height,
        seed: r.seed,
        prompts: r.prompts,
        timingsMs: r.timingsMs,
      },
    };
  }

  // --- events -----------------------------------------------------------------------------------

  #watch(id: string): Watch {
    let w = this.#watches.get(id);
    if (!w) {
      w = { listeners: new Set(), waiters: [], last: undefined, tracked: false, ephemeral: false, startedSeen: false, chain: Promise.resolve() };
      this.#watches.set(id, w);
    }
    return w;
  }

  #unwatchIfIdle(id: string, w: Watch): void {
    if (w.listeners.size === 0 && w.waiters.length === 0 && !(w.tracked && !(w.last && isTerminal(w.last.state)))) this.#watches.delete(id);
  }

  #onEvent(name: string, id: string, data: unknown): void {
    const w = this.#watches.get(id);
    if (!w) return;
    if (name === 'progress' && w.last && !isTerminal(w.last.state) && data && typeof data === 'object') {
      // Built from the event alone: no Redis read per step.
      this.#apply(id, w, this.#runningStatus(id, Date.parse(w.last.createdAt), data as QueueProgress), 'progress');
      return;
    }
    this.#refresh(id);
  }

  /** Reads the job's status and applies it (in order, per job). */
  #refresh(id: string): void {
    const w = this.#watches.get(id);
    if (!w) return;
    w.chain = w.chain.then(async () => {
      if (this.#closed || this.#watches.get(id) !== w) return;
      try {
        this.#apply(id, w, await this.get(id), 'state');
      } catch {
        // Redis unreachable: the poll tries again.
      }
    });
  }

  #apply(id: string, w: Watch, s: JobStatus | undefined, type: JobEvent['type']): void {
    if (this.#watches.get(id) !== w) return;
    const before = w.last;
    if (before && isTerminal(before.state)) return; // an event that arrives after the end changes nothing
    if (!s) {
      // Forgotten (released, expired) or never known: whoever waits gets the last status seen.
      this.#watches.delete(id);
      for (const r of w.waiters.splice(0)) r(undefined);
      w.listeners.clear();
      return;
    }
    w.last = s;
    const changed = !before || before.state !== s.state;
    const moved = !before || before.stage !== s.stage || before.step !== s.step;
    if (s.state === 'running' && w.tracked && !w.startedSeen) {
      w.startedSeen = true;
      this.#o.observer?.started?.(s, Date.parse(s.startedAt!) - Date.parse(s.createdAt));
    }
    if (changed || moved) {
      const event: JobEvent = { type: changed ? 'state' : type, status: s };
      for (const l of [...w.listeners]) {
        try {
          l(event);
        } catch (e) {
          this.#o.observer?.internalError?.(id, e);
        }
      }
    }
    if (isTerminal(s.state)) {
      if (w.tracked) {
        if (s.state === 'done' && s.startedAt && s.finishedAt) {
          const runMs = Date.parse(s.finishedAt) - Date.parse(s.startedAt);
          this.#avgRunMs = this.#avgRunMs ? 0.8 * this.#avgRunMs + 0.2 * runMs : runMs;
        }
        if (w.tracked && !w.startedSeen && s.startedAt) this.#o.observer?.started?.(s, Date.parse(s.startedAt) - Date.parse(s.createdAt));
        this.#o.observer?.finished?.(s, s.result?.timingsMs);
      }
      this.#watches.delete(id);
      for (const r of w.waiters.splice(0)) r(s);
      w.listeners.clear();
    }
  }

  /** Backs up the events: finds watched jobs that have a final record, and now and then re-reads every watched job. */
  async #poll(): Promise<void> {
    if (this.#redis.status !== 'ready' || this.#watches.size === 0) return;
    const ids = [...this.#watches.keys()];
    if (++this.#ticks % 10 === 0) {
      for (const id of ids) this.#refresh(id);
      return;
    }
    try {
      for (let i = 0; i < ids.length; i += 500) {
        const chunk = ids.slice(i, i + 500);
        const finals = await this.#redis.mget(chunk.map((id) => this.keys.final(id)));
        finals.forEach((f, k) => {
          const w = this.#watches.get(chunk[k]);
          if (f && w && !(w.last && isTerminal(w.last.state))) this.#refresh(chunk[k]);
        });
      }
    } catch {
      // Redis unreachable: next tick.
    }
  }

  /** The cached view behind stats(): queue counts and the workers whose heartbeat is fresh. */
  async #refreshView(): Promise<void> {
    if (this.#redis.status !== 'ready') {
      this.#view = { ...this.#view, ready: false };
      return;
    }
    try {
      const counts = await this.queue.getJobCounts('wait', 'delayed', 'prioritized', 'active');
      const names = await this.#redis.zrange(this.keys.workers, 0, '-1');
      const beats = names.length ? await this.#redis.mget(names.map((n) => this.keys.worker(n))) : [];
      const devices: DeviceStatus[] = [];
      const gone: string[] = [];
      beats.forEach((b, i) => {
        if (!b) return void gone.push(names[i]);
        const d = JSON.parse(b) as DeviceStatus;
        devices.push({ name: d.name, state: d.state, busy: d.busy, jobsRun: d.jobsRun, error: d.error });
      });
      if (gone.length) await this.#redis.zrem(this.keys.workers, ...gone);
      devices.sort((a, b) => a.name.localeCompare(b.name));
      this.#view = {
        queued: counts.wait + counts.delayed + counts.prioritized,
        running: counts.active,
        stored: 0,
        storedBytes: 0,
        accepting: this.#accepting,
        ready: devices.some((d) => d.state === 'ready'),
        devices,
      };
    } catch {
      this.#view = { ...this.#view, ready: false };
    }
  }
}
