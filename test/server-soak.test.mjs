// Soak: 1000 requests at concurrency 8 over real HTTP, mixing synchronous calls, jobs (followed by the
// event stream or by polling) and cancellations, on two engines of the tiny model. Every accepted job is
// accounted for exactly once (0 lost, 0 duplicated) on the client and in the server's own counters, each
// result carries the seed its request asked for, RSS before and after is reported and bounded, and the
// server is still ready at the end.
import test from 'ava';
import { XPSR, createServer } from '../dist/lib/index.js';
import { model } from './helpers/fixtures.mjs';
import { QUICK, metric, postImage, query, readEvents, tinyPng, waitFor } from './helpers/server.mjs';

const REQUESTS = 1000;
const CONCURRENCY = 8;
const MiB = 2 ** 20;

test('1000 mixed requests at concurrency 8: 0 lost, 0 duplicated, bounded RSS, still ready', async (t) => {
  t.timeout(300_000, 'the soak is bounded to 5 minutes');
  const engines = [];
  for (let i = 0; i < 2; i++) engines.push(await XPSR.load({ model, device: 'cpu', threads: 1, onNotice: () => {} }));
  const server = await createServer({ engines, resultTtlMs: 1500, maxQueue: 64 });
  const url = await server.listen({ port: 0 });
  t.teardown(async () => {
    await server.close(0);
    for (const e of engines) await e.dispose();
  });
  const images = await Promise.all([0, 1, 2, 3].map((k) => tinyPng(k)));

  // Warm-up (plans, allocator) before the RSS baseline.
  for (let i = 0; i < 16; i++) t.is((await postImage(`${url}/v1/upscale?${query(QUICK)}`, images[i % 4])).status, 200);
  const rssBefore = process.memoryUsage().rss;

  const accepted = new Map(); // job id -> request index
  const outcome = new Map(); // job id -> final state seen by the client
  const problems = [];
  let duplicated = 0;
  let rejected = 0;
  const accept = (id, i) => {
    if (accepted.has(id)) duplicated++;
    accepted.set(id, i);
  };
  const settle = (id, state) => {
    if (outcome.has(id)) duplicated++;
    outcome.set(id, state);
  };
  const checkSeed = (res, i, what) => {
    if (res.headers.get('x-xpsr-seed') !== String(i)) problems.push(`${what} #${i}: seed ${res.headers.get('x-xpsr-seed')}`);
  };

  async function one(i) {
    const kind = i % 10 < 3 ? 'sync' : i % 10 < 6 ? 'job' : 'cancel';
    const q = query({ ...QUICK, seed: String(i) });
    const image = images[i % 4];
    if (kind === 'sync') {
      const res = await postImage(`${url}/v1/upscale?${q}`, image);
      if (res.status === 429) return void rejected++;
      const id = res.headers.get('x-job-id');
      const body = Buffer.from(await res.arrayBuffer());
      if (res.status !== 200 || !id) return void problems.push(`sync #${i}: HTTP ${res.status} ${body.toString().slice(0, 120)}`);
      accept(id, i);
      checkSeed(res, i, 'sync');
      if (body.readUInt32BE(0) !== 0x89504e47) problems.push(`sync #${i}: not a PNG`);
      return settle(id, 'done');
    }
    const res = await postImage(`${url}/v1/jobs?${q}`, image);
    if (res.status === 429) return void rejected++;
    if (res.status !== 202) return void problems.push(`${kind} #${i}: HTTP ${res.status} ${await res.text()}`);
    const { id } = await res.json();
    accept(id, i);
    let final;
    if (kind === 'cancel') {
      const del = await fetch(`${url}/v1/jobs/${id}`, { method: 'DELETE' });
      if (del.status === 200) final = await del.json();
      else if (del.status === 409)
        final = await (await fetch(`${url}/v1/jobs/${id}`)).json(); // it had already finished
      else return void problems.push(`cancel #${i}: DELETE HTTP ${del.status}`);
    } else if (i % 2 === 0) {
      final = (await readEvents(`${url}/v1/jobs/${id}/events`)).at(-1).data;
    } else {
      final = await waitFor(
        async () => {
          const s = await (await fetch(`${url}/v1/jobs/${id}`)).json();
          return ['done', 'failed', 'cancelled'].includes(s.state) && s;
        },
        { intervalMs: 20, timeoutMs: 120_000, what: `job #${i}` },
      );
    }
    if (final.state === 'done') {
      const r = await fetch(`${url}/v1/jobs/${id}/result`);
      await r.arrayBuffer();
      if (r.status !== 200) problems.push(`${kind} #${i}: result HTTP ${r.status}`);
      else checkSeed(r, i, kind);
    } else if (final.state !== 'cancelled' || kind !== 'cancel') {
      problems.push(`${kind} #${i}: ended ${final.state} ${final.error?.code ?? ''}`);
    }
    settle(id, final.state);
  }

  const t0 = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < REQUESTS) await one(next++);
    }),
  );
  const seconds = (performance.now() - t0) / 1000;

  const lost = [...accepted.keys()].filter((id) => !outcome.has(id)).length;
  const states = { done: 0, cancelled: 0, failed: 0 };
  for (const s of outcome.values()) states[s]++;
  t.deepEqual(problems, []);
  t.is(lost, 0, 'lost');
  t.is(duplicated, 0, 'duplicated');
  t.is(accepted.size + rejected, REQUESTS, 'every request was accepted or refused');
  t.true(states.done > 0 && states.cancelled > 0, 'the mix had results and cancellations');

  // The server's own ledger agrees: every accepted job finished exactly once.
  const m = await (await fetch(`${url}/metrics`)).text();
  const finished = ['done', 'failed', 'cancelled'].reduce((n, o) => n + metric(m, 'xpsr_jobs_total', { outcome: o }), 0);
  t.is(finished, accepted.size + 16, 'server-side finished jobs = accepted (+ 16 warm-up)');
  t.is(metric(m, 'xpsr_jobs_total', { outcome: 'cancelled' }), states.cancelled);
  const stats = server.jobs.stats();
  t.is(stats.queued, 0);
  t.is(stats.running, 0);

  // Results expire after their TTL; memory returns to a bounded level.
  await waitFor(() => server.jobs.stats().stored === 0, { timeoutMs: 10_000, what: 'results to expire' });
  t.is(server.jobs.stats().storedBytes, 0);
  const rssAfter = process.memoryUsage().rss;
  t.log(
    `soak: ${REQUESTS} requests in ${seconds.toFixed(1)} s (${(REQUESTS / seconds).toFixed(1)} req/s), ` +
      `${states.done} done, ${states.cancelled} cancelled, ${rejected} refused; ` +
      `RSS before ${(rssBefore / MiB).toFixed(0)} MiB, after ${(rssAfter / MiB).toFixed(0)} MiB (${((rssAfter - rssBefore) / MiB).toFixed(0)} MiB)`,
  );
  t.true(rssAfter - rssBefore < 256 * MiB, `RSS grew by ${((rssAfter - rssBefore) / MiB).toFixed(0)} MiB`);
  const ready = await fetch(`${url}/readyz`);
  t.is(ready.status, 200);
});
