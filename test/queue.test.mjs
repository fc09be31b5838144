// `xpsr serve --redis` + `xpsr worker` / createWorker with a real Redis (each test its own, on a free port)
// and the tiny model: the job API through the queue (results byte-identical to the direct API, progress
// events, a second server answering for the first), cancellation reaching a worker process, SIGTERM
// draining a worker process, retries of transient failures and none for bad input, device loss, expiry
// and cleanup of results and inputs (Redis keys and a shared directory), backpressure, and the warning
// about an evicting Redis.
import test from 'ava';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { XPSR, XpsrError, createServer, createWorker } from '../dist/lib/index.js';
import { model } from './helpers/fixtures.mjs';
import { CLI, fetchRetry, keys, redisClient, spawnWorker } from './helpers/queue.mjs';
import { startRedis } from './helpers/redis.mjs';
import { QUICK, metric, pngDeclaring, postImage, query, readEvents, tinyPng, waitFor } from './helpers/server.mjs';

const engine = await XPSR.load({ model, device: 'cpu', threads: 1, onNotice: () => {} });
test.after.always(() => engine.dispose());

/** Library options equal to QUICK (plus a seed): what a direct API call gets. */
const direct = async (image, seed, extra = {}) =>
  (
    await engine.upscale(image, {
      steps: 1,
      processSize: 64,
      scale: 1,
      guidanceScale: 1,
      colorFix: 'none',
      prompts: { high: 'a cup', low: 'blurry' },
      seed,
      ...extra,
    })
  ).toBuffer('png');

/** A job that runs for seconds unless stopped. */
const SLOW = { ...QUICK, steps: '900' };
const FAST_WORKER = { lockDurationMs: 2000, stalledIntervalMs: 1000, heartbeatMs: 200 };

/** A Redis, servers and in-process workers torn down with the test. */
async function setup(t, { redisConfig } = {}) {
  const redis = await startRedis(redisConfig);
  const closers = [];
  t.teardown(async () => {
    for (const c of closers.reverse()) await c().catch(() => undefined);
    await redis.stop();
  });
  const env = {
    redis,
    check: redisClient(redis.url),
    async server(options = {}) {
      const server = await createServer({ redis: redis.url, onNotice: () => {}, ...options });
      const url = await server.listen({ port: 0 });
      closers.push(() => server.close(0));
      return { server, url };
    },
    async worker(options = {}) {
      const w = await createWorker({ redis: redis.url, engines: [engine], onNotice: () => {}, ...FAST_WORKER, ...options });
      closers.push(() => w.close(0));
      await w.loaded;
      return w;
    },
    spawn(name, args) {
      const w = spawnWorker(redis.url, { name, args });
      closers.push(async () => {
        w.kill('SIGKILL');
        await w.exited;
      });
      return w;
    },
  };
  closers.push(async () => env.check.disconnect());
  return env;
}

const ready = (server, n = 1) =>
  waitFor(() => server.jobs.stats().devices.filter((d) => d.state === 'ready').length >= n, { what: `${n} worker(s) ready` });
const submit = async (url, q, image) => {
  const res = await postImage(`${url}/v1/jobs?${query(q)}`, image ?? (await tinyPng()));
  if (res.status !== 202) throw new Error(`submit: HTTP ${res.status} ${await res.text()}`);
  return res.json();
};
const status = async (url, id) => (await fetch(`${url}/v1/jobs/${id}`)).json();
const settled = (url, id, timeoutMs = 30_000) =>
  waitFor(
    async () => {
      const s = await status(url, id);
      return ['done', 'failed', 'cancelled'].includes(s.state) && s;
    },
    { timeoutMs, intervalMs: 20, what: `job ${id} to end` },
  );
const runningInDenoise = (url, id) =>
  waitFor(
    async () => {
      const s = await status(url, id);
      return s.state === 'running' && s.stage === 'denoise' && s.step > 0 && s;
    },
    { timeoutMs: 30_000, intervalMs: 5, what: `job ${id} running` },
  );

test.serial(
  'through the queue: synchronous and job results byte-identical to the API, progress events, a second server answers, metrics',
  async (t) => {
    const env = await setup(t);
    const worker = await env.worker({ name: 'wA', metricsPort: 0 });
    const { server, url } = await env.server();
    const { url: url2 } = await env.server(); // another stateless front on the same queue
    await ready(server);
    const image = await tinyPng(3);

    const readyz = await (await fetch(`${url}/readyz`)).json();
    t.true(readyz.ready);
    t.deepEqual(
      readyz.devices.map((d) => d.name),
      ['wA/cpu'],
    );

    const sync = await postImage(`${url}/v1/upscale?${query({ ...QUICK, seed: '11' })}`, image);
    t.is(sync.status, 200);
    t.is(sync.headers.get('content-type'), 'image/png');
    t.is(sync.headers.get('x-xpsr-seed'), '11');
    t.deepEqual(Buffer.from(await sync.arrayBuffer()), await direct(image, 11));
    const syncId = sync.headers.get('x-job-id');
    t.is((await fetch(`${url}/v1/jobs/${syncId}`)).status, 404, 'a synchronous result is released once sent');
    t.is(await env.check.exists(`xpsr:xpsr:final:${syncId}`, `xpsr:xpsr:blob:out:${syncId}`), 0);
    await waitFor(async () => (await env.check.exists(`xpsr:xpsr:blob:in:${syncId}`)) === 0, { what: 'the input to be deleted' });

    const job = await submit(url, { ...QUICK, steps: '3', seed: '12' }, image);
    t.is(job.state, 'queued');
    t.is(typeof job.position, 'number');
    const events = await readEvents(`${url}/v1/jobs/${job.id}/events`);
    const names = events.map((e) => e.event);
    t.is(names.at(-1), 'done');
    const denoise = events.filter((e) => e.event === 'progress' && e.data.stage === 'denoise');
    t.deepEqual(
      denoise.map((e) => `${e.data.step}/${e.data.total}`),
      ['1/3', '2/3', '3/3'],
      'every denoising step reaches the stream',
    );
    t.true(events.some((e) => e.event === 'state' && e.data.state === 'running' && e.data.device === 'wA/cpu'));
    const expected = await direct(image, 12, { steps: 3 });
    const r1 = await fetch(`${url}/v1/jobs/${job.id}/result`);
    t.deepEqual(Buffer.from(await r1.arrayBuffer()), expected);
    // The second server knows the job and serves the same result: the fronts hold no state.
    const s2 = await status(url2, job.id);
    t.is(s2.state, 'done');
    t.is(s2.result.seed, 12);
    t.is(s2.device, 'wA/cpu');
    t.deepEqual(Buffer.from(await (await fetch(`${url2}/v1/jobs/${job.id}/result`)).arrayBuffer()), expected);

    // The event stream of a job submitted through one front, read from the other.
    const other = await submit(url, { ...QUICK, seed: '13' }, image);
    const otherEvents = await readEvents(`${url2}/v1/jobs/${other.id}/events`);
    t.is(otherEvents.at(-1).event, 'done');
    t.is(otherEvents.at(-1).data.result.seed, 13);

    // A job without a seed gets one at submission, so any retry reproduces the same image.
    const unseeded = await settled(url, (await submit(url, QUICK, image)).id);
    t.is(unseeded.state, 'done');
    t.deepEqual(Buffer.from(await (await fetch(`${url}/v1/jobs/${unseeded.id}/result`)).arrayBuffer()), await direct(image, unseeded.result.seed));

    const serverMetrics = await (await fetch(`${url}/metrics`)).text();
    t.is(metric(serverMetrics, 'xpsr_jobs_total', { outcome: 'done' }), 4);
    t.true(metric(serverMetrics, 'xpsr_queue_wait_seconds_count') >= 3);
    const workerMetrics = await (await fetch(`${worker.metricsUrl}/metrics`)).text();
    t.is(metric(workerMetrics, 'xpsr_worker_jobs_total', { worker: 'wA', device: 'wA/cpu', outcome: 'done' }), 4);
    t.true(metric(workerMetrics, 'xpsr_stage_duration_seconds_count', { stage: 'denoise' }) >= 3);
    t.is(metric(workerMetrics, 'xpsr_worker_ready', { device: 'wA/cpu' }), 1);
    t.true(metric(workerMetrics, 'xpsr_device_memory_used_bytes', { device: 'wA/cpu' }) > 0, 'the worker reports its device memory');
    t.is((await fetch(`${worker.metricsUrl}/readyz`)).status, 200);
  },
);

test.serial('cancelling a running job reaches the worker process within a second; a queued job is cancelled at once', async (t) => {
  const env = await setup(t);
  const w = env.spawn('wc');
  await w.ready;
  const { server, url } = await env.server();
  await ready(server);

  const slow = await submit(url, SLOW);
  const queued = await submit(url, QUICK);
  await runningInDenoise(url, slow.id);
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/jobs/${slow.id}`, { method: 'DELETE' });
  const ms = performance.now() - t0;
  const body = await res.json();
  t.is(res.status, 200);
  t.is(body.state, 'cancelled');
  t.is(body.error.code, 'ERR_CANCELLED');
  t.true(body.step < 900, `stopped at step ${body.step}`);
  t.true(ms < 1000, `the cancel took effect in ${ms.toFixed(0)} ms`);
  t.log(`cancel of a running job on another process: ${ms.toFixed(0)} ms`);
  t.is((await fetch(`${url}/v1/jobs/${slow.id}/result`)).status, 409);
  // The worker is free again: the queued job runs.
  t.is((await settled(url, queued.id)).state, 'done');

  // Queued jobs (behind a slow one) know their position; one is removed from the queue and its input deleted.
  const slow2 = await submit(url, SLOW);
  await runningInDenoise(url, slow2.id);
  const line = [await submit(url, QUICK), await submit(url, QUICK), await submit(url, QUICK)];
  t.deepEqual(
    line.map((j) => j.position),
    [0, 1, 2],
  );
  t.deepEqual(await Promise.all(line.map(async (j) => (await status(url, j.id)).position)), [0, 1, 2]);
  const waiting = line[1];
  const c = await (await fetch(`${url}/v1/jobs/${waiting.id}`, { method: 'DELETE' })).json();
  t.is((await status(url, line[2].id)).position, 1, 'the job behind moved up');
  t.is(c.state, 'cancelled');
  t.is(c.startedAt, null);
  t.is(await env.check.exists(`xpsr:xpsr:blob:in:${waiting.id}`), 0);
  const again = await fetch(`${url}/v1/jobs/${waiting.id}`, { method: 'DELETE' });
  t.is(again.status, 409);
  t.is((await again.json()).code, 'ERR_JOB_FINISHED');
  await fetch(`${url}/v1/jobs/${slow2.id}`, { method: 'DELETE' });
});

test.serial('SIGTERM: a worker process finishes its running job, takes no new one, exits 0; another worker takes the queue', async (t) => {
  const env = await setup(t);
  const w = env.spawn('wt');
  await w.ready;
  const { server, url } = await env.server();
  await ready(server);

  const running = await submit(url, { ...QUICK, steps: '300', seed: '5' });
  const next = [await submit(url, { ...QUICK, seed: '6' }), await submit(url, { ...QUICK, seed: '7' })];
  await runningInDenoise(url, running.id);
  w.kill('SIGTERM');
  const exit = await w.exited;
  t.deepEqual(exit, { code: 0, signal: null }, w.stderr);
  t.regex(w.stderr, /SIGTERM: draining/);
  const finished = await status(url, running.id);
  t.is(finished.state, 'done', 'the running job finished before the worker exited');
  t.is(finished.device, 'wt/cpu');
  t.deepEqual(
    Buffer.from(await (await fetch(`${url}/v1/jobs/${running.id}/result`)).arrayBuffer()),
    await direct(await tinyPng(), 5, { steps: 300 }),
  );
  for (const j of next) t.is((await status(url, j.id)).state, 'queued', 'no new job was taken');
  await waitFor(() => !server.jobs.stats().devices.some((d) => d.name === 'wt/cpu'), { what: 'the stopped worker to leave the list' });

  await env.worker({ name: 'wt2' });
  for (const [k, j] of next.entries()) {
    const s = await settled(url, j.id);
    t.is(s.state, 'done');
    t.is(s.device, 'wt2/cpu');
    t.deepEqual(Buffer.from(await (await fetch(`${url}/v1/jobs/${j.id}/result`)).arrayBuffer()), await direct(await tinyPng(), 6 + k));
  }
});

test.serial('a server closing finishes its synchronous requests; queued jobs stay in the queue and another server answers for them', async (t) => {
  const env = await setup(t);
  const worker = await env.worker({ name: 'wd' });
  const { server, url } = await env.server();
  const { url: url2 } = await env.server();
  await ready(server);
  const image = await tinyPng(4);
  const sync = postImage(`${url}/v1/upscale?${query({ ...QUICK, steps: '300', seed: '41' })}`, image);
  await waitFor(() => worker.devices()[0].busy, { intervalMs: 2, what: 'the synchronous job to run' });
  const queued = await submit(url, { ...QUICK, seed: '42' }, image);
  const summary = await server.close(30_000);
  t.deepEqual(summary, { done: 1, failed: 0, cancelled: 0, timedOut: false });
  const res = await sync;
  t.is(res.status, 200, 'the synchronous request in flight was answered');
  t.deepEqual(Buffer.from(await res.arrayBuffer()), await direct(image, 41, { steps: 300 }));
  const q = await settled(url2, queued.id);
  t.is(q.state, 'done', 'the queued job ran after its server closed');
  t.deepEqual(Buffer.from(await (await fetch(`${url2}/v1/jobs/${queued.id}/result`)).arrayBuffer()), await direct(image, 42));
});

test.serial('one worker process with two devices: two consumers, one job at a time on each', async (t) => {
  const env = await setup(t);
  const inFlight = new Map();
  const peak = new Map();
  const ran = new Map();
  // Both "devices" share the one test engine; each wrapper counts the calls running on it.
  const device = (name) => ({
    device: 'cpu',
    async upscale(input, options) {
      inFlight.set(name, (inFlight.get(name) ?? 0) + 1);
      peak.set(name, Math.max(peak.get(name) ?? 0, inFlight.get(name)));
      ran.set(name, (ran.get(name) ?? 0) + 1);
      try {
        return await engine.upscale(input, options);
      } finally {
        inFlight.set(name, inFlight.get(name) - 1);
      }
    },
    dispose() {},
  });
  const w = await env.worker({ name: 'multi', engines: [device('first'), device('second')] });
  t.deepEqual(
    w.devices().map((d) => d.name),
    ['multi/cpu', 'multi/cpu#2'],
  );
  const { server, url } = await env.server();
  await ready(server, 2);
  const ids = [];
  for (let i = 0; i < 8; i++) ids.push((await submit(url, { ...QUICK, steps: '20', seed: String(50 + i) })).id);
  const finals = await Promise.all(ids.map((id) => settled(url, id)));
  t.deepEqual(
    finals.map((f) => f.state),
    Array(8).fill('done'),
  );
  t.deepEqual([...new Set(finals.map((f) => f.device))].sort(), ['multi/cpu', 'multi/cpu#2'], 'both devices took jobs');
  t.deepEqual([...peak.values()], [1, 1], 'never two jobs at once on one device');
  t.is(
    [...ran.values()].reduce((a, b) => a + b, 0),
    8,
  );
});

/** An engine that fails as `plan(call)` says (an error code) and otherwise runs the real one. */
function faulty(plan) {
  let calls = 0;
  return {
    get device() {
      return engine.device;
    },
    get calls() {
      return calls;
    },
    async upscale(input, options) {
      const code = plan(calls++);
      if (code) throw new XpsrError(code, `injected ${code}`);
      return engine.upscale(input, options);
    },
    dispose() {},
  };
}

test.serial('transient failures are retried with backoff; bad input fails at once with the library code; a lost device retires', async (t) => {
  const env = await setup(t);
  const { server, url } = await env.server({ attempts: 3, backoffMs: 50 });
  const final = async (id) => JSON.parse(await env.check.get(`xpsr:xpsr:final:${id}`));

  // Out of memory once: retried, done, the same bytes as a direct call.
  const once = faulty((i) => (i === 0 ? 'ERR_OUT_OF_MEMORY' : undefined));
  const w1 = await env.worker({ name: 'flaky', engines: [once] });
  await ready(server);
  const a = await settled(url, (await submit(url, { ...QUICK, seed: '21' })).id);
  t.is(a.state, 'done');
  t.is(once.calls, 2);
  t.is((await final(a.id)).attempts, 2);
  t.deepEqual(Buffer.from(await (await fetch(`${url}/v1/jobs/${a.id}/result`)).arrayBuffer()), await direct(await tinyPng(), 21));

  // Bad input (a PNG whose header is fine and whose data is not): no retry, the library's code.
  const bad = await settled(url, (await submit(url, QUICK, pngDeclaring(16, 16))).id);
  t.is(bad.state, 'failed');
  t.is(bad.error.code, 'ERR_IMAGE_UNREADABLE');
  t.is(once.calls, 3, 'one attempt only');
  t.is((await final(bad.id)).attempts, 1);
  const res = await fetch(`${url}/v1/jobs/${bad.id}/result`);
  t.is(res.status, 422);
  t.is((await res.json()).code, 'ERR_IMAGE_UNREADABLE');
  await w1.close();

  // Out of memory every time: three attempts, then failed with that code.
  const always = faulty(() => 'ERR_OUT_OF_MEMORY');
  const w2 = await env.worker({ name: 'oom', engines: [always] });
  const b = await settled(url, (await submit(url, QUICK)).id);
  t.is(b.state, 'failed');
  t.is(b.error.code, 'ERR_OUT_OF_MEMORY');
  t.is(always.calls, 3);
  await w2.close();

  // A device that is lost takes no more jobs; the job is retried on another worker.
  const lost = faulty(() => 'ERR_DEVICE_UNAVAILABLE');
  const w3 = await env.worker({ name: 'lost', engines: [lost] });
  const c = await submit(url, { ...QUICK, seed: '23' });
  await waitFor(() => lost.calls === 1, { what: 'the lost device to try the job' });
  await w3.stopped;
  t.is(w3.devices()[0].state, 'unusable');
  t.is(w3.devices()[0].error.code, 'ERR_DEVICE_UNAVAILABLE');
  await env.worker({ name: 'good' });
  const cs = await settled(url, c.id);
  t.is(cs.state, 'done');
  t.is(cs.device, 'good/cpu');
  t.is(lost.calls, 1, 'the lost device took no second job');
  t.deepEqual(Buffer.from(await (await fetch(`${url}/v1/jobs/${c.id}/result`)).arrayBuffer()), await direct(await tinyPng(), 23));
});

test.serial('expiry and cleanup: results and records expire, inputs are deleted when their job ends or expire while waiting', async (t) => {
  const env = await setup(t);
  const { server, url } = await env.server({ resultTtlMs: 1500, inputTtlMs: 500 });
  await env.worker({ name: 'we' });
  await ready(server);

  const a = await settled(url, (await submit(url, QUICK)).id);
  t.is(a.state, 'done');
  // The worker deletes the input right after the final record (in that order, so a retry never lacks it).
  await waitFor(async () => (await env.check.exists(`xpsr:xpsr:blob:in:${a.id}`)) === 0, { what: 'the input to be deleted' });
  t.is(await env.check.exists(`xpsr:xpsr:final:${a.id}`, `xpsr:xpsr:blob:out:${a.id}`), 2);
  t.is((await fetch(`${url}/v1/jobs/${a.id}/result`)).status, 200);
  await new Promise((r) => setTimeout(r, 1700));
  t.is((await fetch(`${url}/v1/jobs/${a.id}`)).status, 404);
  t.is((await fetch(`${url}/v1/jobs/${a.id}/result`)).status, 404);
  t.is(await env.check.exists(`xpsr:xpsr:final:${a.id}`, `xpsr:xpsr:blob:out:${a.id}`), 0, 'Redis dropped the record and the result');

  // An input that waits longer than its TTL (the only worker is busy): the job fails with a clear code.
  const slow = await submit(url, SLOW);
  const late = await submit(url, QUICK);
  await runningInDenoise(url, slow.id);
  await new Promise((r) => setTimeout(r, 600));
  await fetch(`${url}/v1/jobs/${slow.id}`, { method: 'DELETE' });
  const l = await settled(url, late.id);
  t.is(l.state, 'failed');
  t.is(l.error.code, 'ERR_INPUT_EXPIRED');
  t.deepEqual(await keys(env.check, 'xpsr:xpsr:blob:in:*'), []);
});

test.serial('a shared blob directory instead of Redis keys: results served from files, files expire and are swept', async (t) => {
  const env = await setup(t);
  const dir = mkdtempSync(path.join(tmpdir(), 'xpsr-shared-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const { server, url } = await env.server({ blobDir: dir, queue: 'shared', resultTtlMs: 1500 });
  await env.worker({ name: 'wd', blobDir: dir, queue: 'shared' });
  await ready(server);
  const image = await tinyPng(9);
  const a = await settled(url, (await submit(url, { ...QUICK, seed: '31' }, image)).id);
  t.is(a.state, 'done');
  const files = () => readdirSync(path.join(dir, 'shared'));
  await waitFor(() => files().length === 1, { what: 'the input file to be deleted' });
  t.deepEqual(files(), [`out_${a.id}.blob`], 'only the result is left (the input was deleted)');
  t.deepEqual(await keys(env.check, 'xpsr:shared:blob:*'), [], 'no image in Redis');
  t.deepEqual(Buffer.from(await (await fetch(`${url}/v1/jobs/${a.id}/result`)).arrayBuffer()), await direct(image, 31));
  await new Promise((r) => setTimeout(r, 1700));
  t.is((await fetch(`${url}/v1/jobs/${a.id}/result`)).status, 404);
  t.is(await server.jobs.blobs.sweep(), 1);
  t.deepEqual(files(), []);

  // A worker on the Redis store cannot read the directory's blobs: the job fails and says why.
  const { server: s2, url: url2 } = await env.server({ blobDir: dir, queue: 'mixed' });
  const w = await env.worker({ name: 'wm', queue: 'mixed' });
  await ready(s2);
  const m = await settled(url2, (await submit(url2, QUICK)).id);
  t.is(m.state, 'failed');
  t.is(m.error.code, 'ERR_BLOB_STORE_MISMATCH');
  t.regex(m.error.message, /same --blob-dir/);
  await w.close();
  // That worker cannot delete the input either: it stays until its TTL, then the sweeps of the servers and workers delete it.
  t.true(existsSync(path.join(dir, 'mixed', `in_${m.id}.blob`)));
});

test.serial('backpressure and readiness: no worker -> 503 naming the queue; a full queue -> 429 with Retry-After', async (t) => {
  const env = await setup(t);
  const { server, url } = await env.server({ maxQueue: 1 });
  const none = await postImage(`${url}/v1/jobs?${query(QUICK)}`, await tinyPng());
  t.is(none.status, 503);
  const body = await none.json();
  t.is(body.code, 'ERR_NOT_READY');
  t.regex(body.message, /no worker is ready on queue 'xpsr'/);
  t.is((await fetch(`${url}/readyz`)).status, 503);

  await env.worker({ name: 'wb' });
  await ready(server);
  t.is((await fetch(`${url}/readyz`)).status, 200);
  const slow = await submit(url, SLOW);
  await runningInDenoise(url, slow.id);
  await submit(url, QUICK); // waits: the queue now holds 1
  const full = await postImage(`${url}/v1/jobs?${query(QUICK)}`, await tinyPng());
  t.is(full.status, 429);
  t.is((await full.json()).code, 'ERR_QUEUE_FULL');
  t.true(Number(full.headers.get('retry-after')) >= 1);
  await fetch(`${url}/v1/jobs/${slow.id}`, { method: 'DELETE' });
});

test.serial('a full Redis (noeviction) refuses new jobs with 503 and keeps serving the jobs it holds', async (t) => {
  const env = await setup(t, { redisConfig: { maxmemory: '4mb' } });
  const { server, url } = await env.server();
  await env.worker({ name: 'wf' });
  await ready(server);
  // 1000x1000 random pixels: a PNG of about 3 MB, more than this Redis has left.
  const noise = await sharp(randomBytes(1000 * 1000 * 3), { raw: { width: 1000, height: 1000, channels: 3 } })
    .png()
    .toBuffer();
  const res = await postImage(`${url}/v1/jobs?${query(QUICK)}`, noise);
  t.is(res.status, 503);
  const body = await res.json();
  t.is(body.code, 'ERR_REDIS_UNAVAILABLE');
  t.regex(body.message, /OOM/);
  t.is((await fetch(`${url}/readyz`)).status, 200);
  // Redis counts the refused command's buffer for a moment; a client retries a 503 shortly after.
  const accepted = await fetchRetry(
    `${url}/v1/jobs?${query({ ...QUICK, seed: '61' })}`,
    { method: 'POST', body: await tinyPng(), headers: { 'content-type': 'image/png' } },
    { tries: 50, delayMs: 100 },
  );
  t.is(accepted.status, 202);
  const small = await settled(url, (await accepted.json()).id);
  t.is(small.state, 'done');
  t.deepEqual(Buffer.from(await (await fetch(`${url}/v1/jobs/${small.id}/result`)).arrayBuffer()), await direct(await tinyPng(), 61));
  await waitFor(async () => (await keys(env.check, 'xpsr:xpsr:blob:in:*')).length === 0, { what: 'no input left (the refused one was never kept)' });
});

test.serial('a Redis whose maxmemory-policy is not noeviction is reported at start (library and xpsr serve --redis)', async (t) => {
  const env = await setup(t, { redisConfig: { 'maxmemory-policy': 'allkeys-lru' } });
  const notices = [];
  const w = await env.worker({ name: 'wp', onNotice: (m) => notices.push(m) });
  t.true(
    w.warnings.some((m) => /maxmemory-policy is 'allkeys-lru'.*noeviction/.test(m)),
    w.warnings.join('\n'),
  );
  t.true(notices.some((m) => /maxmemory-policy/.test(m)));
  const serverNotices = [];
  await env.server({ onNotice: (m) => serverNotices.push(m) });
  t.true(serverNotices.some((m) => /maxmemory-policy is 'allkeys-lru'/.test(m)));

  const proc = spawn(process.execPath, [CLI, 'serve', '--redis', env.redis.url, '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  proc.stderr.on('data', (d) => (stderr += d));
  await waitFor(() => /listening on/.test(stderr), { what: 'xpsr serve --redis to listen' });
  proc.kill('SIGTERM');
  const code = await new Promise((r) => proc.once('exit', r));
  t.is(code, 0, stderr);
  t.regex(stderr, /warning: Redis maxmemory-policy is 'allkeys-lru'/);
});
