/**
 * createServer(): the XPSR HTTP server as a value an app can listen with, embed (`handle(req, res)`) or
 * test (`app.inject`). It assembles the layers: a JobQueue (by default the in-process LocalJobQueue over
 * one XPSR engine per device), the fastify app with its routes, metrics, API keys and the web page, and
 * the shutdown sequence (drain, then close).
 */
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import path from 'node:path';
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import multipart from '@fastify/multipart';
import { invalidOption, type XpsrError } from '../errors.js';
import { packageRoot } from '../native.js';
import type { LoadOptions } from '../options.js';
import type { XPSR } from '../xpsr.js';
import { ApiKeys } from './auth.js';
import { DevicePool } from './devices.js';
import { ERR_DRAINING, ERR_NOT_READY, ERR_QUEUE_FULL, toHttpError } from './errors.js';
import type { DrainSummary, JobQueue } from './jobs.js';
import { LocalJobQueue } from './local-jobs.js';
import { MAX_BATCH, MAX_BATCH_DELAY_MS } from '../batch/options.js';
import { ServerMetrics } from './metrics.js';
import { registerRoutes } from './routes.js';
import { EventStreams } from './sse.js';
import { registerWebPage } from './web.js';

export interface ServerOptions {
  /** Weights (as XPSR.load): SD-1.5 + XPSR checkpoint folders, or one folder with all components. */
  sd?: string;
  xpsr?: string;
  model?: string;
  /** Devices, one engine each: 'cpu', 'cuda', 'cuda:0,cuda:1' or a list. Default 'auto'. */
  devices?: string | string[];
  /** CPU backend threads per engine. */
  threads?: number;
  /** Captioner for requests without captions (shared by the engines). */
  captioner?: LoadOptions['captioner'];
  /** Use these loaded engines instead of loading weights (the server does not dispose them). */
  engines?: XPSR[];
  /**
   * Use this job queue instead of the local one (e.g. a remote-worker queue); its owner closes it and
   * wires `metrics.observer()` into it for the job metrics.
   */
  jobs?: JobQueue;
  /**
   * Run jobs on remote workers (`xpsr worker`, createWorker) through a BullMQ queue on this Redis instead of
   * local engines: the server is then a stateless front (docs/deployment.md). No weights are loaded here.
   */
  redis?: string;
  /** With `redis`: the queue name (default 'xpsr'), shared by the servers and workers of one deployment. */
  queue?: string;
  /** With `redis`: a shared directory for input and result images instead of Redis keys (the workers use the same). */
  blobDir?: string;
  /** With `redis`: largest image blob kept in Redis (default 64 MiB). */
  maxBlobBytes?: number;
  /** With `redis`: how long a queued job's input waits for a worker (default 1 h; then ERR_INPUT_EXPIRED). */
  inputTtlMs?: number;
  /** With `redis`: attempts per job for transient failures (device lost, out of memory; default 3) and the first backoff (default 1 s). */
  attempts?: number;
  backoffMs?: number;
  /** Bearer API keys; none = open. */
  apiKeys?: string[];
  /** Most jobs waiting for a device; more are refused with 429 + Retry-After. Default 32. */
  maxQueue?: number;
  /**
   * Dynamic batching on each local device: a free device takes up to `maxBatch` waiting jobs (default 1)
   * and runs those of one processed size as one batch (XPSR batching), the oldest waiting up to
   * `batchDelayMs` (default 0) for others to arrive. Not with `redis` or `jobs` (the engines are elsewhere).
   */
  maxBatch?: number;
  batchDelayMs?: number;
  /** Largest request body in bytes (raw image or multipart). Default 32 MiB. */
  bodyLimitBytes?: number;
  /** Largest input image (width x height). Default 1,048,576 (the library's default). */
  maxInputPixels?: number;
  /** Largest output or processed image. Default 16 x maxInputPixels. */
  maxOutputPixels?: number;
  /** A running job is stopped (failed, ERR_TIMEOUT) after this long. Default 10 min. */
  jobTimeoutMs?: number;
  /** Finished jobs and results are kept this long. Default 10 min. */
  resultTtlMs?: number;
  /** Upper bound of kept result bytes (oldest finished jobs forgotten first). Default 1 GiB. */
  maxResultBytes?: number;
  /** Upper bound of kept finished job records. Default 10,000. */
  maxFinishedJobs?: number;
  /** How long close() lets queued and running jobs finish before cancelling them. Default 60 s. */
  drainTimeoutMs?: number;
  /** fastify's logger option (default off). */
  logger?: FastifyServerOptions['logger'];
  /** Notices of the engines (CPU fallback...). Default console.warn. */
  onNotice?: (message: string) => void;
}

export interface XpsrServer {
  /** The fastify instance (routes registered; call listen() or use handle()/inject()). */
  readonly app: FastifyInstance;
  readonly jobs: JobQueue;
  readonly metrics: ServerMetrics;
  /** Every route (method and URL), e.g. to mount the server behind a proxy or to check the OpenAPI document. */
  readonly routes: { method: string; url: string }[];
  /** Settles when the weights are loaded on every device; rejects with the load error. */
  readonly loaded: Promise<void>;
  /** Listens (default 127.0.0.1:8080) and resolves with the URL. */
  listen(options?: { host?: string; port?: number }): Promise<string>;
  /** A node http request handler, to mount the server inside another http server. */
  handle(req: IncomingMessage, res: ServerResponse): void;
  /** Stops accepting (503, /readyz false), finishes queued and running jobs, cancels what is left. */
  drain(timeoutMs?: number): Promise<DrainSummary>;
  /** drain() then closes the HTTP server and frees the engines. Idempotent. */
  close(timeoutMs?: number): Promise<DrainSummary>;
}

const MiB = 2 ** 20;

function positive(name: string, v: number | undefined, def: number, min = 1): number {
  if (v === undefined) return def;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min) throw invalidOption(name, `a number >= ${min}`, v);
  return v;
}

function deviceList(d: ServerOptions['devices']): string[] {
  const list = d === undefined ? ['auto'] : Array.isArray(d) ? d : d.split(',');
  const out = list.map((x) => String(x).trim()).filter((x) => x.length > 0);
  if (out.length === 0) throw invalidOption('devices', "a device list such as 'cpu' or 'cuda:0,cuda:1'", d);
  return out;
}

export async function createServer(options: ServerOptions = {}): Promise<XpsrServer> {
  const o = options;
  const limits = {
    maxInputPixels: positive('maxInputPixels', o.maxInputPixels, 1_048_576),
    maxOutputPixels: 0,
  };
  limits.maxOutputPixels = positive('maxOutputPixels', o.maxOutputPixels, 16 * limits.maxInputPixels);
  const bodyLimit = Math.floor(positive('bodyLimitBytes', o.bodyLimitBytes, 32 * MiB, 1024));
  const maxQueue = Math.floor(positive('maxQueue', o.maxQueue, 32, 0));
  const jobTimeoutMs = positive('jobTimeoutMs', o.jobTimeoutMs, 600_000);
  const resultTtlMs = positive('resultTtlMs', o.resultTtlMs, 600_000);
  const drainTimeoutMs = positive('drainTimeoutMs', o.drainTimeoutMs, 60_000, 0);
  const maxBatch = positive('maxBatch', o.maxBatch, 1);
  if (!Number.isInteger(maxBatch) || maxBatch > MAX_BATCH) throw invalidOption('maxBatch', `an integer between 1 and ${MAX_BATCH}`, maxBatch);
  const batchDelayMs = positive('batchDelayMs', o.batchDelayMs, 0, 0);
  if (batchDelayMs > MAX_BATCH_DELAY_MS) throw invalidOption('batchDelayMs', `a number of milliseconds up to ${MAX_BATCH_DELAY_MS}`, batchDelayMs);
  if ((o.jobs || o.redis !== undefined) && (o.maxBatch !== undefined || o.batchDelayMs !== undefined))
    throw invalidOption('maxBatch', 'no batching options with redis or jobs (batching runs where the engines are)', o.maxBatch ?? o.batchDelayMs);
  const keys = new ApiKeys(o.apiKeys ?? []);
  const version = (JSON.parse(readFileSync(path.join(packageRoot, 'package.json'), 'utf8')) as { version: string }).version;

  let jobs: JobQueue;
  const metrics = new ServerMetrics(() => jobs);
  let pool: DevicePool | undefined;
  if (o.jobs) {
    jobs = o.jobs;
  } else if (o.redis !== undefined) {
    if (o.captioner)
      throw invalidOption('captioner', 'no captioner with redis (captioning runs on the workers: give it to xpsr worker)', 'a captioner');
    const { RedisJobQueue } = await import('../queue/redis-jobs.js');
    jobs = await RedisJobQueue.create({
      redis: o.redis,
      queue: o.queue,
      blobDir: o.blobDir,
      maxBlobBytes: o.maxBlobBytes,
      inputTtlMs: o.inputTtlMs,
      attempts: o.attempts,
      backoffMs: o.backoffMs,
      maxQueue,
      jobTimeoutMs,
      resultTtlMs,
      maxInputPixels: limits.maxInputPixels,
      onNotice: o.onNotice,
      observer: { ...metrics.observer(), internalError: (id, e) => app.log.error({ err: e, job: id }, 'job event listener failed') },
    });
  } else {
    pool = new DevicePool(
      o.engines
        ? { engines: o.engines }
        : { load: { sd: o.sd, xpsr: o.xpsr, model: o.model, threads: o.threads, onNotice: o.onNotice }, devices: deviceList(o.devices) },
    );
    jobs = new LocalJobQueue(pool, {
      maxQueue,
      jobTimeoutMs,
      resultTtlMs,
      maxResultBytes: positive('maxResultBytes', o.maxResultBytes, 1024 * MiB),
      maxFinishedJobs: Math.floor(positive('maxFinishedJobs', o.maxFinishedJobs, 10_000)),
      maxInputPixels: limits.maxInputPixels,
      captioner: o.captioner,
      maxBatch,
      batchDelayMs,
      observer: { ...metrics.observer(), internalError: (id, e) => app.log.error({ err: e, job: id }, 'job failed with an unexpected error') },
    });
  }
  const loaded = pool ? pool.loaded : Promise.resolve();

  const app = Fastify({
    logger: o.logger ?? false,
    bodyLimit,
    forceCloseConnections: 'idle',
    return503OnClosing: false, // while closing, answers still come from our routes (JSON errors, status reads)
    // Requests that are not even valid HTTP get our JSON error too, then the connection closes.
    clientErrorHandler: (err, socket) => {
      if ((err as { code?: string }).code === 'ECONNRESET' || !socket.writable) return socket.destroy();
      const body = JSON.stringify({ code: 'ERR_BAD_REQUEST', message: 'malformed HTTP request' });
      socket.end(
        `HTTP/1.1 400 Bad Request\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
          `Connection: close\r\n\r\n${body}`,
      );
    },
  });
  // Only image bodies and multipart forms are accepted; anything else is a 415 before it is read.
  app.removeAllContentTypeParsers();
  for (const type of ['application/octet-stream', /^image\/[\w.+-]+$/i])
    app.addContentTypeParser(type, { parseAs: 'buffer', bodyLimit }, (_req, body, done) => done(null, body));
  await app.register(multipart, {
    limits: { fileSize: bodyLimit, files: 1, fields: 40, fieldSize: 64 * 1024, parts: 42, headerPairs: 100 },
  });

  let draining = false;
  const streams = new EventStreams();
  const notReady = (): { code: string; message: string } | null => {
    if (draining || !jobs.stats().accepting) return { code: ERR_DRAINING, message: 'the server is shutting down' };
    const s = jobs.stats();
    if (s.ready) return null;
    if (o.redis !== undefined) {
      return {
        code: ERR_NOT_READY,
        message: `no worker is ready on queue '${o.queue ?? 'xpsr'}' (start one with xpsr worker), or Redis is unreachable`,
      };
    }
    const bad = s.devices.find((d) => d.error);
    return {
      code: ERR_NOT_READY,
      message: bad ? `device ${bad.name} is ${bad.state}: ${bad.error!.message}` : 'the server is still loading the model weights',
    };
  };

  const routes: { method: string; url: string }[] = [];
  app.addHook('onRoute', (r) => {
    for (const method of [r.method].flat()) if (method !== 'HEAD') routes.push({ method, url: r.url });
  });

  app.setErrorHandler((err, req, reply) => {
    const h = toHttpError(err);
    if (h.status >= 500 && h.code === 'ERR_INTERNAL') req.log.error({ err }, 'request failed');
    if (h.code === ERR_QUEUE_FULL) {
      const details = (err as XpsrError).details as { retryAfterSeconds?: number } | undefined;
      void reply.header('Retry-After', String(details?.retryAfterSeconds ?? jobs.retryAfterSeconds()));
    }
    if (h.code === ERR_QUEUE_FULL || h.code === ERR_DRAINING || h.code === ERR_NOT_READY) metrics.rejected(h.code);
    if (h.status === 401) void reply.header('WWW-Authenticate', 'Bearer');
    if (h.code === 'ERR_BODY_TOO_LARGE') h.message = `the request body is larger than this server's limit of ${bodyLimit} bytes`;
    if (h.status === 415)
      h.message =
        `content type '${String(req.headers['content-type'] ?? '(none)').slice(0, 100)}' is not accepted: send the image as the body ` +
        '(image/* or application/octet-stream) or as multipart/form-data';
    return reply.code(h.status).send({ code: h.code, message: h.message });
  });
  app.setNotFoundHandler((req, reply) =>
    reply.code(404).send({ code: 'ERR_NOT_FOUND', message: `no route ${req.method} ${req.url.split('?')[0].slice(0, 200)}` }),
  );
  app.addHook('onResponse', async (req, reply) => {
    metrics.response(req.routeOptions.url ?? 'unknown', req.method, reply.statusCode);
  });

  registerRoutes(app, {
    jobs,
    keys,
    metrics,
    streams,
    limits,
    version,
    notReady,
    info: () => {
      const s = jobs.stats();
      return {
        version,
        ready: s.ready && s.accepting,
        accepting: s.accepting,
        devices: s.devices,
        captioner: !!o.captioner,
        auth: keys.enabled,
        queued: s.queued,
        running: s.running,
        limits: { maxQueue, bodyLimitBytes: bodyLimit, ...limits, jobTimeoutMs, resultTtlMs },
      };
    },
  });
  registerWebPage(app);
  await app.ready();

  let closing: Promise<DrainSummary> | undefined;
  const drain = async (timeoutMs = drainTimeoutMs): Promise<DrainSummary> => {
    draining = true;
    return jobs.drain(timeoutMs);
  };
  return {
    app,
    jobs,
    metrics,
    loaded,
    routes,
    async listen({ host = '127.0.0.1', port = 8080 } = {}) {
      return app.listen({ host, port });
    },
    handle(req, res) {
      app.routing(req, res);
    },
    drain,
    close(timeoutMs = drainTimeoutMs) {
      closing ??= (async () => {
        const summary = await drain(timeoutMs);
        streams.closeAll();
        await app.close();
        if (!o.jobs) await jobs.close();
        return summary;
      })();
      return closing;
    },
  };
}
