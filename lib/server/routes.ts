/**
 * The HTTP API (see openapi.ts for the contract). Routes only parse, call the JobQueue and shape the
 * answer; they never touch an engine.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { XpsrError, type XpsrErrorCode } from '../errors.js';
import type { ApiKeys } from './auth.js';
import { ERR_CLIENT_GONE, ERR_JOB_FINISHED, ERR_JOB_NOT_FINISHED, ERR_JOB_NOT_FOUND, ERR_DRAINING, ERR_NOT_READY, statusOf } from './errors.js';
import { readJobRequest, type InputLimits } from './input.js';
import { isTerminal, type JobQueue, type JobResult, type JobStatus } from './jobs.js';
import type { ServerMetrics } from './metrics.js';
import { openApiDocument } from './openapi.js';
import type { EventStreams } from './sse.js';

export interface RouteContext {
  jobs: JobQueue;
  keys: ApiKeys;
  metrics: ServerMetrics;
  streams: EventStreams;
  limits: InputLimits;
  /** Facts for GET /v1/info. */
  info: () => Record<string, unknown>;
  version: string;
  /** Why the server is not ready (loading, draining...), or null when it is. */
  notReady: () => { code: string; message: string } | null;
}

/** Longest a DELETE waits for a running job to stop before answering with its current status. */
const CANCEL_WAIT_MS = 10_000;

/** Captions longer than this are cut in the headers (clients limit header sizes); the job status has them whole. */
const HEADER_PROMPT_CHARS = 1000;

function sendResult(reply: FastifyReply, r: JobResult, id: string): FastifyReply {
  const cut = r.prompts.high.length > HEADER_PROMPT_CHARS || r.prompts.low.length > HEADER_PROMPT_CHARS;
  if (cut) void reply.header('X-Xpsr-Prompts-Truncated', 'true');
  if (r.batchSize !== undefined) void reply.header('X-Xpsr-Batch-Size', String(r.batchSize));
  const prompt = (p: string) => encodeURIComponent(p.slice(0, HEADER_PROMPT_CHARS));
  const timing = Object.entries(r.timingsMs)
    .map(([k, v]) => `${k};dur=${v.toFixed(1)}`)
    .join(', ');
  return reply
    .code(200)
    .header('Content-Type', r.contentType)
    .header('Content-Disposition', `inline; filename="xpsr-${id}.${r.format === 'jpeg' ? 'jpg' : r.format}"`)
    .header('X-Job-Id', id)
    .header('X-Xpsr-Seed', String(r.seed))
    .header('X-Xpsr-Width', String(r.width))
    .header('X-Xpsr-Height', String(r.height))
    .header('X-Xpsr-Prompt-High', prompt(r.prompts.high))
    .header('X-Xpsr-Prompt-Low', prompt(r.prompts.low))
    .header('Server-Timing', timing)
    .send(r.data);
}

function jobError(status: JobStatus): XpsrError {
  const e = status.error ?? { code: 'ERR_INTERNAL', message: `job ${status.state}` };
  return new XpsrError(e.code as XpsrErrorCode, e.message); // an unknown code becomes ERR_INTERNAL
}

export function registerRoutes(app: FastifyInstance, ctx: RouteContext): void {
  const { jobs, keys } = ctx;
  const auth = async (req: FastifyRequest) => keys.check(req.headers.authorization);
  const known = async (id: string): Promise<JobStatus> => {
    const s = await jobs.get(id);
    if (!s) throw new XpsrError(ERR_JOB_NOT_FOUND, `no job with id '${id.slice(0, 64)}' (unknown, or finished longer ago than the result TTL)`);
    return s;
  };
  /** Submissions are refused before their body is read when the server cannot take them anyway. */
  const accepting = async () => {
    const s = jobs.stats();
    if (!s.accepting) throw new XpsrError(ERR_DRAINING, 'the server is shutting down and accepts no new jobs');
    if (!s.devices.some((d) => d.state === 'ready')) {
      const why = ctx.notReady();
      throw new XpsrError(ERR_NOT_READY, why?.message ?? 'no device is ready');
    }
  };

  app.post('/v1/upscale', { onRequest: [auth, accepting] }, async (req, reply) => {
    const request = await readJobRequest(req, ctx.limits);
    const submitted = await jobs.submit(request, { ephemeral: true });
    const id = submitted.id;
    // A synchronous client that goes away cancels its job (queued: at once; running: between steps).
    const onClose = () => {
      if (!reply.raw.writableFinished) void jobs.cancel(id, ERR_CLIENT_GONE, 'the client disconnected');
    };
    reply.raw.on('close', onClose);
    const final = (await jobs.settled(id))!;
    try {
      if (final.state !== 'done') throw jobError(final);
      const r = await jobs.result(id);
      if (!r) throw new XpsrError('ERR_INTERNAL', 'the result was lost');
      return sendResult(reply, r, id);
    } finally {
      await jobs.release(id);
    }
  });

  app.post('/v1/jobs', { onRequest: [auth, accepting] }, async (req, reply) => {
    const request = await readJobRequest(req, ctx.limits);
    const status = await jobs.submit(request);
    return reply.code(202).header('Location', `/v1/jobs/${status.id}`).send(status);
  });

  app.get<{ Params: { id: string } }>('/v1/jobs/:id', { onRequest: [auth] }, async (req) => known(req.params.id));

  app.delete<{ Params: { id: string } }>('/v1/jobs/:id', { onRequest: [auth] }, async (req) => {
    const before = await known(req.params.id);
    if (isTerminal(before.state)) throw new XpsrError(ERR_JOB_FINISHED, `the job has already finished (state ${before.state})`);
    await jobs.cancel(before.id);
    let timer: NodeJS.Timeout | undefined;
    const final = await Promise.race([
      jobs.settled(before.id),
      new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), CANCEL_WAIT_MS))),
    ]);
    clearTimeout(timer);
    return final ?? (await known(before.id));
  });

  app.get<{ Params: { id: string } }>('/v1/jobs/:id/result', { onRequest: [auth] }, async (req, reply) => {
    const s = await known(req.params.id);
    if (!isTerminal(s.state))
      throw new XpsrError(
        ERR_JOB_NOT_FINISHED,
        `the job is ${s.state}${s.position !== null ? ` (position ${s.position})` : ''}; ` + 'wait for it (GET /v1/jobs/{id} or /events)',
      );
    if (s.state !== 'done') throw jobError(s);
    const r = await jobs.result(s.id);
    if (!r) throw new XpsrError(ERR_JOB_NOT_FOUND, 'the result has expired');
    return sendResult(reply, r, s.id);
  });

  app.get<{ Params: { id: string } }>('/v1/jobs/:id/events', { onRequest: [auth] }, async (req, reply) => {
    const s = await known(req.params.id);
    ctx.metrics.response('/v1/jobs/:id/events', 'GET', 200);
    ctx.streams.stream(reply, jobs, s);
    return reply;
  });

  app.get('/v1/info', { onRequest: [auth] }, async () => ctx.info());

  app.get('/healthz', async () => ({ status: 'ok' }));

  app.get('/readyz', async (req, reply) => {
    const why = ctx.notReady();
    const devices = jobs.stats().devices;
    if (why) return reply.code(statusOf(why.code)).send({ ...why, devices });
    return { ready: true, devices };
  });

  app.get('/metrics', { onRequest: [auth] }, async (req, reply) => {
    const text = await ctx.metrics.registry.metrics();
    return reply.header('Content-Type', ctx.metrics.registry.contentType).send(text);
  });

  const doc = openApiDocument(ctx.version, keys.enabled);
  app.get('/openapi.json', async () => doc);
}
