#!/usr/bin/env node
// `npm run bench:queue -- [--jobs N] [--workers 1,2,4] [--rounds R] [--steps S] [--size PX] [--process-size PX]`
// What the Redis queue costs and gives, on the tiny test model on the CPU (where engine work is small and
// the queue's share is the most visible), against a real redis-server started for the run (appendonly,
// appendfsync everysec: the recommended production settings):
// - per-job overhead, one job at a time: a direct XPSR.upscale() + PNG encoding, the local server's job path
//   (POST /v1/jobs -> event stream -> GET result, one engine in this process) and the same job path through
//   `xpsr serve --redis` + one `xpsr worker` process, interleaved in rounds so machine noise hits all alike;
// - throughput: a burst of N jobs through the queue with 1, 2 and 4 worker processes (jobs/s, time in queue
//   p50/p99 = submission to start on a worker, run time p50), against direct calls on one engine.
// Prints JSON and saves it under .bench/. A measurement, never a test assertion.
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { XPSR, createServer } from '../dist/lib/index.js';
import { percentile } from '../dist/lib/bench/stats.js';
import { redisClient, spawnWorker } from '../test/helpers/queue.mjs';
import { startRedis } from '../test/helpers/redis.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values: v } = parseArgs({
  options: {
    jobs: { type: 'string', default: '100' },
    workers: { type: 'string', default: '1,2,4' },
    rounds: { type: 'string', default: '30' },
    steps: { type: 'string', default: '1' },
    size: { type: 'string', default: '16' },
    'process-size': { type: 'string', default: '64' },
  },
});
const jobs = Number(v.jobs);
const rounds = Number(v.rounds);
const levels = v.workers.split(',').map(Number);
const model = path.join(root, 'test', 'fixtures', 'model');
const options = {
  steps: Number(v.steps),
  processSize: Number(v['process-size']),
  scale: 1,
  guidanceScale: 1,
  colorFix: 'none',
  prompts: { high: 'a cup of coffee', low: 'blurry' },
};
const query = (seed) =>
  new URLSearchParams({
    steps: v.steps,
    processSize: v['process-size'],
    scale: '1',
    guidanceScale: '1',
    colorFix: 'none',
    seed: String(seed),
    'prompts.high': options.prompts.high,
    'prompts.low': options.prompts.low,
  }).toString();
const size = Number(v.size);
const image = await sharp({ create: { width: size, height: size, channels: 3, background: { r: 180, g: 120, b: 60 } } })
  .png()
  .toBuffer();

const pct = (xs, p) =>
  xs.length
    ? percentile(
        [...xs].sort((a, b) => a - b),
        p,
      )
    : NaN;
const r1 = (x) => Math.round(x * 10) / 10;
const stats = (xs) => ({ p50: r1(pct(xs, 50)), p95: r1(pct(xs, 95)), p99: r1(pct(xs, 99)), mean: r1(xs.reduce((a, b) => a + b, 0) / xs.length) });
const load0 = os.loadavg();

const redis = await startRedis({ appendfsync: 'everysec' });
const check = redisClient(redis.url);
const engine = await XPSR.load({ model, device: 'cpu', threads: 1, onNotice: () => {} });
const local = await createServer({ engines: [engine], maxQueue: 100_000 });
const localUrl = await local.listen({ port: 0 });
const queued = await createServer({ redis: redis.url, maxQueue: 100_000, resultTtlMs: 3600_000, onNotice: () => {} });
const queueUrl = await queued.listen({ port: 0 });

async function jobPath(url, seed) {
  const res = await fetch(`${url}/v1/jobs?${query(seed)}`, { method: 'POST', body: image, headers: { 'content-type': 'image/png' } });
  if (res.status !== 202) throw new Error(`submit: HTTP ${res.status} ${await res.text()}`);
  const { id } = await res.json();
  await (await fetch(`${url}/v1/jobs/${id}/events`)).text(); // the stream ends after the final event
  const out = await fetch(`${url}/v1/jobs/${id}/result`);
  await out.arrayBuffer();
  if (out.status !== 200) throw new Error(`result: HTTP ${out.status}`);
  return id;
}
const startWorkers = async (n) => {
  const ws = Array.from({ length: n }, (_, k) => spawnWorker(redis.url, { name: `bench${k + 1}` }));
  await Promise.all(ws.map((w) => w.ready));
  const t0 = Date.now();
  while (queued.jobs.stats().devices.filter((d) => d.state === 'ready').length < n) {
    if (Date.now() - t0 > 30_000) throw new Error('workers not listed');
    await new Promise((r) => setTimeout(r, 50));
  }
  return ws;
};
const stopWorkers = async (ws) => {
  for (const w of ws) w.kill('SIGTERM');
  await Promise.all(ws.map((w) => w.exited));
  await new Promise((r) => setTimeout(r, 3500)); // heartbeats of the stopped workers expire
};

// 1. Per-job overhead, one job at a time, interleaved.
const seq = { direct: [], localJob: [], queueJob: [] };
const seqQueueIds = [];
{
  const ws = await startWorkers(1);
  const modes = {
    direct: async (seed) => (await engine.upscale(image, { ...options, seed })).toBuffer('png'),
    localJob: (seed) => jobPath(localUrl, seed),
    queueJob: async (seed) => seqQueueIds.push(await jobPath(queueUrl, seed)),
  };
  for (const m of Object.values(modes)) await m(0); // warm up
  for (let r = 0; r < rounds; r++) {
    for (const [name, fn] of Object.entries(modes)) {
      const t0 = performance.now();
      await fn(r + 1);
      seq[name].push(performance.now() - t0);
    }
  }
  await stopWorkers(ws);
}
const sequential = Object.fromEntries(Object.entries(seq).map(([k, xs]) => [k, stats(xs)]));
// Where a queued job's time goes (from its final record): submission to start on the worker, the library
// call, and the worker's own work around it (input blob read, PNG encoding, result blob, final record).
const seqRecords = (await check.mget(seqQueueIds.slice(1).map((id) => `xpsr:xpsr:final:${id}`))).map((x) => JSON.parse(x));
const overhead = {
  queueVsDirectMs: r1(sequential.queueJob.p50 - sequential.direct.p50),
  queueVsDirectRatio: Math.round((sequential.queueJob.p50 / sequential.direct.p50) * 100) / 100,
  queueVsLocalServerMs: r1(sequential.queueJob.p50 - sequential.localJob.p50),
  queueJobBreakdownMs: {
    submissionToStart: stats(seqRecords.map((r) => r.startedAt - r.createdAt)),
    library: stats(seqRecords.map((r) => r.result.timingsMs.total)),
    workerAroundLibrary: stats(seqRecords.map((r) => r.finishedAt - r.startedAt - r.result.timingsMs.total)),
  },
};

// 2. Throughput of a burst: direct calls on one engine, then the queue with 1, 2, 4 worker processes.
const burst = [];
{
  const t0 = performance.now();
  for (let i = 0; i < jobs; i++) await (await engine.upscale(image, { ...options, seed: i })).toBuffer('png');
  const s = (performance.now() - t0) / 1000;
  burst.push({ mode: 'direct, one engine', workers: 0, jobs, seconds: r1(s), jobsPerSecond: r1(jobs / s) });
}
for (const n of levels) {
  const ws = await startWorkers(n);
  const t0 = performance.now();
  const ids = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (next < jobs) {
        const seed = next++;
        const res = await fetch(`${queueUrl}/v1/jobs?${query(seed)}`, { method: 'POST', body: image, headers: { 'content-type': 'image/png' } });
        if (res.status !== 202) throw new Error(`submit: HTTP ${res.status}`);
        ids.push((await res.json()).id);
      }
    }),
  );
  const finals = await Promise.all(ids.map((id) => queued.jobs.settled(id)));
  const s = (performance.now() - t0) / 1000;
  const bad = finals.filter((f) => f?.state !== 'done');
  if (bad.length) throw new Error(`${bad.length} jobs did not end done`);
  const records = (await check.mget(ids.map((id) => `xpsr:xpsr:final:${id}`))).map((x) => JSON.parse(x));
  const perWorker = {};
  for (const r of records) perWorker[r.worker] = (perWorker[r.worker] ?? 0) + 1;
  burst.push({
    mode: 'queue',
    workers: n,
    jobs,
    seconds: r1(s),
    jobsPerSecond: r1(jobs / s),
    timeInQueueMs: stats(records.map((r) => r.startedAt - r.createdAt)),
    runMs: stats(records.map((r) => r.finishedAt - r.startedAt)),
    libraryMs: stats(records.map((r) => r.result.timingsMs.total)),
    jobsPerWorker: Object.values(perWorker).sort((a, b) => b - a),
  });
  await stopWorkers(ws);
}

const report = {
  bench: 'queue',
  date: new Date().toISOString(),
  machine: {
    cpus: os.cpus().length,
    cpu: os.cpus()[0]?.model,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    loadavgStart: load0,
    loadavgEnd: os.loadavg(),
  },
  workload: {
    model: 'test/fixtures/model (tiny)',
    device: 'cpu',
    threadsPerEngine: 1,
    ...options,
    inputPx: size,
    redis: 'appendonly yes, appendfsync everysec',
  },
  sequential: { rounds, msPerJob: sequential, overhead },
  burst,
};
console.log(JSON.stringify(report, null, 2));
mkdirSync(path.join(root, '.bench'), { recursive: true });
writeFileSync(path.join(root, '.bench', `queue-${Date.now()}.json`), JSON.stringify(report, null, 2));

await queued.close(0);
await local.close(0);
await engine.dispose();
check.disconnect();
await redis.stop();
