// The Redis queue under failures, with a real Redis (appendonly, appendfsync always) and real `xpsr worker`
// child processes on the tiny model: one server, two workers, 200 jobs. A worker is SIGKILLed in the middle
// of a job (and restarted, as an orchestrator would), Redis is crashed and restarted in the middle of the run
// while clients keep submitting. Every job must end done (or failed with a reason), none lost, none
// duplicated, and each result must be byte-identical to a direct API call with the same seed.
import test from 'ava';
import { XPSR, createServer } from '../dist/lib/index.js';
import { model } from './helpers/fixtures.mjs';
import { fetchRetry, keys, redisClient, spawnWorker } from './helpers/queue.mjs';
import { startRedis } from './helpers/redis.mjs';
import { QUICK, query, tinyPng, waitFor } from './helpers/server.mjs';

const JOBS = 200;
/** Jobs submitted before the Redis restart; the rest are submitted while it restarts. */
const BEFORE_RESTART = 180;
const IMAGES = 7;

/** The library options of a request's query fields (what a direct API call gets). */
function libraryOptions(q) {
  return {
    steps: Number(q.steps),
    processSize: Number(q.processSize),
    scale: Number(q.scale),
    guidanceScale: Number(q.guidanceScale),
    colorFix: q.colorFix,
    seed: Number(q.seed),
    prompts: { high: q['prompts.high'], low: q['prompts.low'] },
  };
}

test('200 jobs on two workers: a worker SIGKILLed mid-job and a Redis crash mid-run lose nothing, duplicate nothing, change no byte', async (t) => {
  const redis = await startRedis();
  const workers = [];
  let server;
  const check = redisClient(redis.url);
  t.teardown(async () => {
    for (const w of workers) w.kill('SIGKILL');
    await Promise.all(workers.map((w) => w.exited));
    await server?.close(0).catch(() => undefined);
    check.disconnect();
    await redis.stop();
  });

  workers.push(spawnWorker(redis.url, { name: 'w1' }), spawnWorker(redis.url, { name: 'w2' }));
  await Promise.all(workers.map((w) => w.ready));
  server = await createServer({ redis: redis.url, maxQueue: 1000, resultTtlMs: 600_000, onNotice: () => {} });
  const url = await server.listen({ port: 0 });
  await waitFor(() => server.jobs.stats().devices.filter((d) => d.state === 'ready').length === 2, { what: 'two workers listed' });

  const images = await Promise.all(Array.from({ length: IMAGES }, (_, k) => tinyPng(k)));
  // Job 0 is slow (600 steps, a few seconds) so that the kill certainly lands in the middle of it.
  const specs = Array.from({ length: JOBS }, (_, i) => ({
    i,
    image: i % IMAGES,
    q: { ...QUICK, seed: String(1000 + i), ...(i === 0 ? { steps: '600' } : {}) },
    id: undefined,
  }));
  const submit = async (s) => {
    // 503 (Redis unreachable while it restarts) and network errors are retried: not accepted, so not lost.
    const res = await fetchRetry(`${url}/v1/jobs?${query(s.q)}`, { method: 'POST', body: images[s.image], headers: { 'content-type': 'image/png' } });
    if (res.status !== 202) throw new Error(`submit ${s.i}: HTTP ${res.status} ${await res.text()}`);
    s.id = (await res.json()).id;
  };
  const statusOf = async (id) => (await fetchRetry(`${url}/v1/jobs/${id}`)).json();

  await submit(specs[0]);
  const submitted = (async () => {
    for (const s of specs.slice(1, BEFORE_RESTART)) await submit(s);
  })();

  // SIGKILL the worker running job 0 while it denoises; the orchestrator starts a replacement.
  const running = await waitFor(
    async () => {
      const s = await statusOf(specs[0].id);
      return s.state === 'running' && s.stage === 'denoise' && s.step > 0 && s;
    },
    { timeoutMs: 60_000, intervalMs: 5, what: 'job 0 running' },
  );
  const victim = workers.find((w) => running.device.startsWith(`${w.name}/`));
  t.truthy(victim, `job 0 runs on ${running.device}`);
  victim.kill('SIGKILL');
  t.is((await victim.exited).signal, 'SIGKILL');
  t.log(`SIGKILLed ${victim.name} at step ${running.step}/${running.total} of job 0`);
  const replacement = spawnWorker(redis.url, { name: 'w3' });
  workers.push(replacement);
  await submitted;

  // Mid-run: crash Redis and restart it while the last jobs are being submitted.
  await waitFor(() => server.jobs.stats().queued <= BEFORE_RESTART / 2, { timeoutMs: 120_000, intervalMs: 50, what: 'half of the jobs started' });
  const queuedAtCrash = server.jobs.stats().queued;
  const restarted = redis.restart(700);
  await Promise.all([restarted, ...specs.slice(BEFORE_RESTART).map((s) => submit(s))]);
  t.log(`Redis crashed and restarted with ${queuedAtCrash} jobs queued`);
  await replacement.ready;

  // Every job ends.
  const finals = new Map();
  await waitFor(
    async () => {
      for (const s of specs) {
        if (finals.has(s.id)) continue;
        const st = await statusOf(s.id);
        if (['done', 'failed', 'cancelled'].includes(st.state)) finals.set(s.id, st);
      }
      return finals.size === JOBS;
    },
    { timeoutMs: 150_000, intervalMs: 200, what: 'every job to end' },
  );

  // None lost, none duplicated: 200 distinct ids, one final record per job and nothing else in Redis.
  t.is(new Set(specs.map((s) => s.id)).size, JOBS);
  const finalKeys = await keys(check, 'xpsr:xpsr:final:*');
  t.deepEqual(finalKeys.map((k) => k.split(':').pop()).sort(), specs.map((s) => s.id).sort(), 'exactly one final record per submitted job');
  t.is((await keys(check, 'xpsr:xpsr:blob:out:*')).length, JOBS, 'one result blob per job');
  // Inputs are deleted just after each final record.
  await waitFor(async () => (await keys(check, 'xpsr:xpsr:blob:in:*')).length === 0, { what: 'every input blob to be deleted' });
  const counts = () => server.jobs.queue.getJobCounts('wait', 'active', 'delayed', 'failed');
  // BullMQ completes a job just after its final record is written.
  await waitFor(async () => Object.values(await counts()).every((n) => n === 0), { timeoutMs: 10_000, what: 'an empty queue' }).catch(
    () => undefined,
  );
  t.deepEqual(await counts(), { wait: 0, active: 0, delayed: 0, failed: 0 }, 'nothing left in the queue');

  const failed = [...finals.values()].filter((s) => s.state !== 'done');
  for (const s of failed) t.truthy(s.error?.code && s.error?.message, `job ${s.id} ended ${s.state} with a reason`);
  t.deepEqual(
    failed.map((s) => `${s.state} ${s.error?.code}: ${s.error?.message}`),
    [],
    'every job done',
  );

  // The killed worker's job was taken over by another worker and finished there, once.
  const job0 = JSON.parse(await check.get(`xpsr:xpsr:final:${specs[0].id}`));
  t.true(job0.attempts >= 2, `job 0 took ${job0.attempts} attempts`);
  t.false(job0.device.startsWith(`${victim.name}/`), `job 0 finished on ${job0.device}`);

  // Each result is byte-identical to a direct API call with the same seed.
  const engine = await XPSR.load({ model, device: 'cpu', threads: 1, onNotice: () => {} });
  try {
    let same = 0;
    for (const s of specs) {
      const expected = await (await engine.upscale(images[s.image], libraryOptions(s.q))).toBuffer('png');
      const res = await fetchRetry(`${url}/v1/jobs/${s.id}/result`);
      t.is(res.status, 200);
      t.is(res.headers.get('x-xpsr-seed'), s.q.seed);
      if (Buffer.from(await res.arrayBuffer()).equals(expected)) same++;
    }
    t.is(same, JOBS, 'results byte-identical to direct calls');
  } finally {
    await engine.dispose();
  }
});
