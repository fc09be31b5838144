/**
 * createWorker(): a GPU worker of the Redis queue. One engine (one XPSR) per device, each consuming
 * upscale jobs with its own BullMQ worker at concurrency 1, so a device runs one job at a time; several
 * devices are several consumers in one process (or run one process per device).
 *
 * A job attempt: the final record already exists (an earlier attempt finished, its worker died before
 * BullMQ heard) -> return it; else read the input blob, run the library with an AbortSignal that a cancel
 * request or the job's timeout aborts, write the result blob and then the final record (both
 * create-if-absent, keyed by the job id), delete the input. Failures: transient codes (device lost, out of
 * memory) are thrown for BullMQ to retry after a backoff; every other coded error ends the job at once
 * (UnrecoverableError) with the library's code.
 *
 * Delivery is at-least-once: a worker killed mid-job holds a lock that expires after `lockDurationMs`;
 * another worker's stalled-job check then puts the job back in the queue, and the idempotent writes above
 * make the retry end the job exactly once.
 */
import { hostname } from 'node:os';
import { UnrecoverableError, WaitingError, Worker as BullWorker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import { XpsrError } from '../errors.js';
import type { XpsrCaptioner } from '../captioners/types.js';
import type { UpscaleOptions } from '../options.js';
import { CONTENT_TYPES, type DeviceStatus, type JobError } from '../server/jobs.js';
import { ERR_TIMEOUT } from '../server/errors.js';
import type { UpscaleResult } from '../xpsr.js';
import { XPSR } from '../xpsr.js';
import { createBlobStore, type BlobStore } from './blobs.js';
import { CancelWatcher } from './cancel.js';
import {
  DEFAULT_QUEUE,
  ERR_BLOB_STORE_MISMATCH,
  ERR_INPUT_EXPIRED,
  ERR_REDIS_UNAVAILABLE,
  QueueKeys,
  TRANSIENT_CODES,
  type FinalRecord,
  type QueueJobData,
  type QueueProgress,
} from './protocol.js';
import { failureText, readFinal, settle } from './records.js';
import { connectRedis, redisWarnings, waitReady } from './redis.js';
import { WorkerMetrics, serveMetrics } from './worker-metrics.js';

/** What a worker needs of an engine (XPSR; tests wrap a real XPSR to inject device faults). */
export interface WorkerEngine {
  readonly device: string;
  upscale(input: Buffer, options: UpscaleOptions): Promise<UpscaleResult>;
  dispose(): Promise<void> | void;
}

export interface WorkerOptions {
  /** Redis URL, e.g. redis://redis.internal:6379 (the same Redis as the servers'). */
  redis: string;
  /** Queue name (default 'xpsr'): servers and workers of one deployment use the same. */
  queue?: string;
  /** Weights (as XPSR.load). */
  sd?: string;
  xpsr?: string;
  model?: string;
  /** Devices, one engine each: 'cuda:0', 'cuda:0,cuda:1', 'cpu' or a list. Default 'auto' (one engine). */
  devices?: string | string[];
  threads?: number;
  /** Use these loaded engines instead of loading weights (not disposed by the worker). */
  engines?: WorkerEngine[];
  /** Captioner for jobs that arrive without captions. */
  captioner?: XpsrCaptioner;
  /** This worker's name in heartbeats, statuses and metrics. Default `<hostname>-<pid>`. */
  name?: string;
  /** A shared blob directory (the servers must use the same); default: Redis keys. */
  blobDir?: string;
  /** Largest blob in Redis (default 64 MiB). */
  maxBlobBytes?: number;
  /** A job's lock lasts this long and is renewed at half of it; a worker that died is noticed after it expires. Default 30 s. */
  lockDurationMs?: number;
  /** How often this worker looks for jobs whose worker died. Default 30 s. */
  stalledIntervalMs?: number;
  /** A job whose worker died more often than this fails (ERR_WORKER_LOST). Default 2. */
  maxStalledCount?: number;
  /** Heartbeat period (servers list a worker while its heartbeat is fresh). Default 1 s. */
  heartbeatMs?: number;
  /** Fallback poll of a running job's cancel key (the pub/sub message is the fast path). Default 500 ms. */
  cancelPollMs?: number;
  /** How long close() lets the running job finish before handing it back to the queue. Default 10 min. */
  drainTimeoutMs?: number;
  /** Serve /metrics, /healthz, /readyz on this port (0 = any free port). Default: no HTTP endpoint. */
  metricsPort?: number;
  metricsHost?: string;
  /** Notices and log lines (engine notices, Redis warnings, device losses, internal errors). Default console.warn. */
  onNotice?: (message: string) => void;
}

export interface XpsrWorker {
  readonly name: string;
  readonly queue: string;
  /** Settles when every device has its engine and consumes jobs; rejects with the first load error. */
  readonly loaded: Promise<void>;
  readonly metrics: WorkerMetrics;
  /** The metrics endpoint, when `metricsPort` was given. */
  readonly metricsUrl: string | undefined;
  /** Warnings about the Redis configuration, found at start (also sent to onNotice). */
  readonly warnings: string[];
  devices(): DeviceStatus[];
  /** Settles when every device is out of service (device lost) or the worker closed. */
  readonly stopped: Promise<void>;
  /**
   * Takes no new job; lets the running ones finish within `timeoutMs` (default drainTimeoutMs), then hands
   * what still runs back to the queue for another worker; frees the engines and connections. Idempotent.
   */
  close(timeoutMs?: number): Promise<void>;
}

interface Running {
  id: string;
  controller: AbortController;
  /** Why the attempt was asked to stop: the code and message the job ends with. */
  stop: JobError | null;
  /** Stopped by a shutdown: the job goes back to the queue instead of ending. */
  handBack: boolean;
}

class DeviceRunner {
  state: DeviceStatus['state'] = 'loading';
  engine: WorkerEngine | undefined;
  bull: BullWorker<QueueJobData, FinalRecord> | undefined;
  busy = false;
  jobsRun = 0;
  error: JobError | null = null;
  current: Running | undefined;

  constructor(
    public name: string,
    public device: string,
    readonly owned: boolean,
  ) {}

  status(): DeviceStatus {
    return { name: this.name, state: this.state, busy: this.busy, jobsRun: this.jobsRun, error: this.error };
  }
}

function deviceList(d: WorkerOptions['devices']): string[] {
  const list = d === undefined ? ['auto'] : Array.isArray(d) ? d : d.split(',');
  const out = list.map((x) => String(x).trim()).filter((x) => x.length > 0);
  if (out.length === 0)
    throw new XpsrError('ERR_INVALID_OPTION', "Invalid option 'devices': expected a device list such as 'cuda:0' or 'cuda:0,cuda:1'");
  return out;
}

const positive = (name: string, v: number | undefined, def: number, min = 1): number => {
  if (v === undefined) return def;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min)
    throw new XpsrError('ERR_INVALID_OPTION', `Invalid option '${name}': expected a number >= ${min}, got ${String(v)}`);
  return v;
};

class QueueWorker implements XpsrWorker {
  readonly name: string;
  readonly queue: string;
  readonly metrics: WorkerMetrics;
  metricsUrl: string | undefined;
  warnings: string[] = [];
  loaded!: Promise<void>;
  readonly stopped: Promise<void>;
  readonly #o: WorkerOptions;
  readonly #keys: QueueKeys;
  readonly #redis: Redis;
  readonly #subscriber: Redis;
  readonly #blobs: BlobStore;
  readonly #cancels: CancelWatcher;
  readonly #runners: DeviceRunner[] = [];
  readonly #notice: (m: string) => void;
  readonly #lockDurationMs: number;
  readonly #stalledIntervalMs: number;
  readonly #maxStalledCount: number;
  readonly #heartbeatMs: number;
  readonly #drainTimeoutMs: number;
  #heartbeat: NodeJS.Timeout | undefined;
  #sweeper: NodeJS.Timeout | undefined;
  #metricsServer: { close(): Promise<void> } | undefined;
  #closing: Promise<void> | undefined;
  #draining = false;
  #stoppedResolve!: () => void;

  constructor(o: WorkerOptions) {
    if (typeof o.redis !== 'string' || !o.redis)
      throw new XpsrError('ERR_INVALID_OPTION', "Invalid option 'redis': expected a Redis URL such as redis://127.0.0.1:6379");
    this.#o = o;
    this.queue = o.queue ?? DEFAULT_QUEUE;
    this.#keys = new QueueKeys(this.queue);
    this.name = o.name ?? `${hostname()}-${process.pid}`;
    if (!/^[\w.:@-]{1,100}$/.test(this.name))
      throw new XpsrError('ERR_INVALID_OPTION', `Invalid option 'name': letters, digits and . : @ _ - only, got '${this.name.slice(0, 100)}'`);
    this.#notice = o.onNotice ?? ((m) => console.warn(m));
    this.#lockDurationMs = positive('lockDurationMs', o.lockDurationMs, 30_000, 100);
    this.#stalledIntervalMs = positive('stalledIntervalMs', o.stalledIntervalMs, 30_000, 100);
    this.#maxStalledCount = Math.floor(positive('maxStalledCount', o.maxStalledCount, 2, 0));
    this.#heartbeatMs = positive('heartbeatMs', o.heartbeatMs, 1000, 50);
    this.#drainTimeoutMs = positive('drainTimeoutMs', o.drainTimeoutMs, 600_000, 0);
    this.#redis = connectRedis(o.redis, `xpsr-worker:${this.name}`);
    this.#subscriber = connectRedis(o.redis, `xpsr-worker:${this.name}:cancel`);
    this.#blobs = createBlobStore(this.#redis, this.#keys, o);
    this.#cancels = new CancelWatcher(this.#subscriber, this.#redis, this.#keys, positive('cancelPollMs', o.cancelPollMs, 500, 10));
    this.metrics = new WorkerMetrics(this.name, () => this.devices());
    this.stopped = new Promise((r) => (this.#stoppedResolve = r));
  }

  async start(): Promise<void> {
    const o = this.#o;
    try {
      await waitReady(this.#redis, 10_000);
    } catch {
      this.#redis.disconnect();
      this.#subscriber.disconnect();
      throw new XpsrError(
        ERR_REDIS_UNAVAILABLE,
        `cannot reach Redis at ${o.redis.replace(/\/\/[^@/]*@/, '//***@')} (is it running? is the URL right?)`,
      );
    }
    this.warnings = await redisWarnings(this.#redis).catch(() => []);
    for (const w of this.warnings) this.#notice(`xpsr worker: warning: ${w}`);
    await this.#cancels.start();
    if (o.metricsPort !== undefined) {
      const m = await serveMetrics(this.metrics, () => this.#ready(), o.metricsHost ?? '127.0.0.1', o.metricsPort);
      this.metricsUrl = m.url;
      this.#metricsServer = m;
    }
    if (o.engines) {
      for (const e of o.engines) {
        const r = new DeviceRunner(this.#deviceName(e.device), e.device, false);
        r.engine = e;
        this.#runners.push(r);
      }
    } else {
      for (const d of deviceList(o.devices)) this.#runners.push(new DeviceRunner(`${this.name}/${d}`, d, true));
    }
    this.#heartbeat = setInterval(() => void this.#beat(), this.#heartbeatMs);
    this.#heartbeat.unref();
    void this.#beat();
    if (this.#blobs.kind === 'dir') {
      this.#sweeper = setInterval(() => void this.#blobs.sweep().catch(() => undefined), 60_000);
      this.#sweeper.unref();
    }
    const loads = this.#runners.map(async (r) => {
      try {
        if (!r.engine) {
          r.engine = await XPSR.load({ sd: o.sd, xpsr: o.xpsr, model: o.model, threads: o.threads, device: r.device, onNotice: this.#notice });
          r.device = r.engine.device;
          r.name = this.#deviceName(r.device, r);
        }
        r.state = 'ready';
        if (!this.#draining) this.#consume(r);
      } catch (e) {
        const err = e as { code?: string; message?: string };
        r.state = 'failed';
        r.error = { code: err.code ?? 'ERR_INTERNAL', message: err.message ?? String(e) };
        throw e;
      } finally {
        void this.#beat();
      }
    });
    this.loaded = Promise.all(loads).then(() => undefined);
    this.loaded.catch(() => this.#checkStopped());
  }

  /** `<worker>/<device>`, with `#2`, `#3`... when one device has several engines. */
  #deviceName(device: string, self?: DeviceRunner): string {
    const taken = new Set(this.#runners.filter((r) => r !== self).map((r) => r.name));
    let name = `${this.name}/${device}`;
    for (let k = 2; taken.has(name); k++) name = `${this.name}/${device}#${k}`;
    return name;
  }

  devices(): DeviceStatus[] {
    return this.#runners.map((r) => r.status());
  }

  #ready(): boolean {
    return !this.#draining && this.#runners.length > 0 && this.#runners.every((r) => r.state === 'ready') && this.#redis.status === 'ready';
  }

  #consume(r: DeviceRunner): void {
    r.bull = new BullWorker<QueueJobData, FinalRecord>(this.queue, (job, token) => this.#process(r, job, token), {
      connection: this.#redis,
      name: r.name,
      concurrency: 1,
      autorun: false,
      lockDuration: this.#lockDurationMs,
      stalledInterval: this.#stalledIntervalMs,
      maxStalledCount: this.#maxStalledCount,
      drainDelay: 5,
    });
    // Connection errors while Redis restarts are expected (ioredis reconnects); others go to the log.
    r.bull.on('error', (e) => {
      if (!/ECONNREFUSED|ECONNRESET|Connection is closed|EPIPE|ETIMEDOUT/.test(String(e?.message)))
        this.#notice(`xpsr worker ${r.name}: ${e.message}`);
    });
    void r.bull.run().catch((e: Error) => this.#notice(`xpsr worker ${r.name}: stopped consuming: ${e.message}`));
  }

  async #beat(): Promise<void> {
    if (this.#redis.status !== 'ready') return;
    const now = Date.now();
    const m = this.#redis.multi();
    for (const r of this.#runners) {
      const status = r.status();
      if (this.#draining && status.state === 'ready') {
        status.state = 'unusable';
        status.error = { code: 'ERR_DRAINING', message: 'the worker is shutting down' };
      }
      m.set(
        this.#keys.worker(r.name),
        JSON.stringify({ ...status, worker: this.name, host: hostname(), pid: process.pid, metricsUrl: this.metricsUrl ?? null }),
        'PX',
        3 * this.#heartbeatMs + 1000,
      );
      m.zadd(this.#keys.workers, now, r.name);
    }
    await m.exec().catch(() => undefined);
  }

  /** One attempt of one job on device `r` (see the file comment). */
  async #process(r: DeviceRunner, job: Job<QueueJobData, FinalRecord>, token?: string): Promise<FinalRecord> {
    const id = job.id!;
    const d = job.data;
    const startedAt = Date.now();
    const earlier = await readFinal(this.#redis, this.#keys, id);
    if (earlier) {
      // An earlier attempt ended the job (its worker died before BullMQ recorded it): nothing to redo.
      this.metrics.attempt(r.name, 'duplicate');
      await this.#dropInput(d, id);
      if (earlier.state === 'done') return earlier;
      throw new UnrecoverableError(failureText(earlier.error ?? { code: 'ERR_INTERNAL', message: `job ${earlier.state}` }));
    }
    const run: Running = { id, controller: new AbortController(), stop: null, handBack: false };
    const stopWith = (e: JobError) => {
      if (run.stop || run.handBack) return;
      run.stop = e;
      run.controller.abort();
    };
    r.current = run;
    r.busy = true;
    r.jobsRun++;
    const unwatch = this.#cancels.watch(id, (c) => stopWith({ code: c.code, message: c.message }));
    const timer = setTimeout(
      () => stopWith({ code: ERR_TIMEOUT, message: `the job ran longer than its timeout (${(d.timeoutMs / 1000).toFixed(1)} s)` }),
      d.timeoutMs,
    );
    this.metrics.started(startedAt - d.createdAt);
    const report = (stage: string | null, step: number, total: number) => {
      const p: QueueProgress = { stage, step, total, device: r.name, worker: this.name, startedAt };
      job.updateProgress(p as unknown as object).catch(() => undefined); // progress is best effort (Redis may be restarting)
    };
    report(null, 0, 0);
    try {
      const input = await this.#readInput(d);
      if (run.controller.signal.aborted) throw new XpsrError('ERR_CANCELLED', 'cancelled');
      const t0 = Date.now();
      const out = await r.engine!.upscale(input, {
        ...d.options,
        maxInputPixels: d.maxInputPixels,
        ...(this.#o.captioner ? { captioner: this.#o.captioner } : {}),
        signal: run.controller.signal,
        onProgress: (e) => report(e.stage, e.step, e.total),
      });
      const libraryMs = Date.now() - t0;
      const data = await out.toBuffer(d.format);
      if (run.controller.signal.aborted) throw new XpsrError('ERR_CANCELLED', 'cancelled'); // asked to stop while encoding
      const blob = { store: this.#blobs.kind, name: this.#keys.outputBlob(id), bytes: data.length };
      await this.#blobs.put(blob.name, data, d.resultTtlMs, { ifAbsent: true });
      const now = Date.now();
      const { record, won } = await settle(this.#redis, this.#keys, {
        id,
        state: 'done',
        error: null,
        device: r.name,
        worker: this.name,
        createdAt: d.createdAt,
        startedAt,
        finishedAt: now,
        expiresAt: now + d.resultTtlMs,
        attempts: job.attemptsStarted || 1,
        result: {
          format: d.format,
          contentType: CONTENT_TYPES[d.format],
          bytes: data.length,
          width: out.width,
          height: out.height,
          seed: out.seed,
          prompts: out.prompts,
          timingsMs: { ...out.timingsMs },
          blob,
        },
      });
      if (!won && record.state !== 'done') await this.#blobs.delete(blob.name); // cancelled meanwhile: our result is not the job's
      await this.#dropInput(d, id);
      if (won) {
        this.metrics.attempt(r.name, 'done');
        this.metrics.done(out.timingsMs, now - startedAt - libraryMs);
      } else {
        this.metrics.attempt(r.name, 'duplicate');
      }
      if (record.state === 'done') return record;
      throw new UnrecoverableError(failureText(record.error!));
    } catch (e) {
      if (e instanceof UnrecoverableError) throw e;
      return await this.#failed(r, job, token, run, e, startedAt);
    } finally {
      clearTimeout(timer);
      unwatch();
      r.current = undefined;
      r.busy = false;
      void this.#beat();
    }
  }

  /** Ends, retries or hands back a job whose attempt threw (never returns normally unless an earlier attempt had finished it). */
  async #failed(
    r: DeviceRunner,
    job: Job<QueueJobData, FinalRecord>,
    token: string | undefined,
    run: Running,
    e: unknown,
    startedAt: number,
  ): Promise<FinalRecord> {
    const err = e as { code?: unknown; message?: unknown };
    const coded = typeof err?.code === 'string';
    const code = coded ? (err.code as string) : 'ERR_INTERNAL';
    if (run.handBack && code === 'ERR_CANCELLED') {
      // The worker is shutting down and the job did not finish in time: another worker takes it.
      await job.moveToWait(token);
      this.metrics.attempt(r.name, 'handed_back');
      throw new WaitingError();
    }
    let state: 'failed' | 'cancelled' = 'failed';
    let error: JobError;
    if (run.stop && code === 'ERR_CANCELLED') {
      error = run.stop;
      if (run.stop.code !== ERR_TIMEOUT) state = 'cancelled';
    } else if (!coded) {
      this.#notice(`xpsr worker ${r.name}: job ${job.id} failed with an unexpected error: ${(e as Error)?.stack ?? String(e)}`);
      error = { code, message: 'internal error (details are in the worker log)' };
    } else {
      error = { code, message: String(err.message) };
      if (code === 'ERR_DEVICE_UNAVAILABLE') this.#retire(r, error);
      if (TRANSIENT_CODES.includes(code) && job.attemptsMade + 1 < (job.opts.attempts ?? 1)) {
        this.metrics.attempt(r.name, 'retried', code);
        throw new Error(failureText(error)); // BullMQ tries again after the backoff (maybe on another worker)
      }
    }
    const now = Date.now();
    const d = job.data;
    const { record } = await settle(this.#redis, this.#keys, {
      id: job.id!,
      state,
      error,
      result: null,
      device: r.name,
      worker: this.name,
      createdAt: d.createdAt,
      startedAt,
      finishedAt: now,
      expiresAt: now + d.resultTtlMs,
      attempts: job.attemptsStarted || 1,
    });
    await this.#dropInput(d, job.id!);
    this.metrics.attempt(r.name, record.state === 'done' ? 'duplicate' : record.state, record.error?.code);
    if (record.state === 'done') return record;
    throw new UnrecoverableError(failureText(record.error!));
  }

  async #readInput(d: QueueJobData): Promise<Buffer> {
    if (d.input.store !== this.#blobs.kind)
      throw new XpsrError(
        ERR_BLOB_STORE_MISMATCH,
        `the job's input is in the ${d.input.store} blob store but this worker uses the ${this.#blobs.kind} ` +
          'store: start the servers and the workers with the same --blob-dir (or none)',
      );
    const input = await this.#blobs.get(d.input.name);
    if (!input) throw new XpsrError(ERR_INPUT_EXPIRED, 'the input image expired before a worker took the job (raise --input-ttl or add workers)');
    return input;
  }

  /** A job that ended needs neither its input nor a pending cancel request any more. */
  async #dropInput(d: QueueJobData, id: string): Promise<void> {
    await this.#redis.del(this.#keys.cancel(id)).catch(() => undefined);
    if (d.input.store === this.#blobs.kind) await this.#blobs.delete(d.input.name).catch(() => undefined);
  }

  /** A device that reported ERR_DEVICE_UNAVAILABLE takes no more jobs (its job is retried elsewhere). */
  #retire(r: DeviceRunner, error: JobError): void {
    if (r.state !== 'ready') return;
    r.state = 'unusable';
    r.error = error;
    this.#notice(`xpsr worker ${r.name}: device lost (${error.message}); it takes no more jobs`);
    setImmediate(() => void r.bull?.close().then(() => this.#checkStopped()));
  }

  #checkStopped(): void {
    if (this.#closing || this.#runners.every((r) => r.state !== 'ready' && r.state !== 'loading')) this.#stoppedResolve();
  }

  /** Stops the running jobs now and returns them to the queue (another worker takes them). */
  #handBack(): void {
    for (const r of this.#runners) {
      if (r.current && !r.current.stop) {
        r.current.handBack = true;
        r.current.controller.abort();
      }
    }
  }

  close(timeoutMs = this.#drainTimeoutMs): Promise<void> {
    if (this.#closing) {
      if (timeoutMs <= 0) this.#handBack(); // a second, impatient close (a second SIGTERM)
      return this.#closing;
    }
    this.#closing = (async () => {
      this.#draining = true;
      await this.#beat();
      const timer = setTimeout(() => this.#handBack(), Math.max(0, timeoutMs));
      await Promise.all(this.#runners.map((r) => r.bull?.close().catch(() => undefined)));
      clearTimeout(timer);
      clearInterval(this.#heartbeat);
      clearInterval(this.#sweeper);
      await this.loaded?.catch(() => undefined);
      if (this.#redis.status === 'ready') {
        const m = this.#redis.multi();
        for (const r of this.#runners) m.del(this.#keys.worker(r.name)).zrem(this.#keys.workers, r.name);
        await m.exec().catch(() => undefined);
      }
      await Promise.all(
        this.#runners.map(async (r) => {
          if (r.owned) await r.engine?.dispose();
        }),
      );
      await this.#metricsServer?.close();
      await Promise.all([quit(this.#subscriber), quit(this.#redis)]);
      this.#stoppedResolve();
    })();
    return this.#closing;
  }
}

/** QUIT, or drop the connection when Redis does not answer within a second (e.g. it is down). */
async function quit(r: Redis): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([r.quit().catch(() => undefined), new Promise((res) => (timer = setTimeout(res, 1000)))]);
  clearTimeout(timer);
  r.disconnect();
}

/** Connects to Redis, starts loading the engines (`loaded`) and consumes jobs on each device as soon as it is ready. */
export async function createWorker(options: WorkerOptions): Promise<XpsrWorker> {
  const w = new QueueWorker(options);
  await w.start();
  return w;
}
