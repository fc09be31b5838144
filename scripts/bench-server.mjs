#!/usr/bin/env node
// `npm run bench:server -- [--requests N] [--concurrency 1,4] [--steps S] [--size PX] [--model DIR] [--device D] [--threads T]`
// What the HTTP server adds on top of the library: the same upscale through direct XPSR.upscale() calls
// (+ PNG encoding, which the server also does) and through `xpsr serve` over HTTP on 127.0.0.1 (the
// synchronous POST /v1/upscale, and the job path POST /v1/jobs -> event stream -> GET result), on ONE
// engine shared by both, in the same run, interleaved in rounds so machine noise hits all modes alike.
// Prints JSON (requests/s, latency p50/p95/p99 per mode and concurrency, overhead vs direct) and saves it
// under .bench/. A measurement, never a test assertion. Default: the tiny test model on the CPU, where the
// engine work is small and the server's share is the most visible.
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { XPSR, createServer } from '../dist/lib/index.js';
import { percentile } from '../dist/lib/bench/stats.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values: v } = parseArgs({
  options: {
    requests: { type: 'string', default: '120' },
    concurrency: { type: 'string', default: '1,4' },
    rounds: { type: 'string', default: '4' },
    steps: { type: 'string', default: '1' },
    size: { type: 'string', default: '16' },
    'process-size': { type: 'string', default: '64' },
    model: { type: 'string', default: path.join(root, 'test', 'fixtures', 'model') },
    sd: { type: 'string' },
    xpsr: { type: 'string' },
    device: { type: 'string', default: 'cpu' },
    threads: { type: 'string' },
  },
});
const requests = Number(v.requests);
const rounds = Number(v.rounds);
const levels = v.concurrency.split(',').map(Number);
const options = {
  steps: Number(v.steps),
  processSize: Number(v['process-size']),
  scale: 1,
  guidanceScale: 1,
  colorFix: 'none',
  seed: 1,
  prompts: { high: 'a cup of coffee', low: 'blurry' },
};
const query = new URLSearchParams({
  steps: v.steps,
  processSize: v['process-size'],
  scale: '1',
  guidanceScale: '1',
  colorFix: 'none',
  seed: '1',
  'prompts.high': options.prompts.high,
  'prompts.low': options.prompts.low,
}).toString();
const size = Number(v.size);
const image = await sharp({ create: { width: size, height: size, channels: 3, background: { r: 180, g: 120, b: 60 } } })
  .png()
  .toBuffer();

const engine = await XPSR.load({
  ...(v.sd ? { sd: v.sd, xpsr: v.xpsr } : { model: v.model }),
  device: v.device,
  threads: v.threads ? Number(v.threads) : undefined,
  onNotice: () => {},
});
const server = await createServer({ engines: [engine], maxQueue: 1024 });
const url = await server.listen({ host: '127.0.0.1', port: 0 });

const modes = {
  direct: async () => {
    const r = await engine.upscale(image, options);
    await r.toBuffer('png');
  },
  http: async () => {
    const res = await fetch(`${url}/v1/upscale?${query}`, { method: 'POST', body: image, headers: { 'content-type': 'image/png' } });
    await res.arrayBuffer();
    if (res.status !== 200) throw new Error(`HTTP ${res.status}`);
  },
  httpJob: async () => {
    const res = await fetch(`${url}/v1/jobs?${query}`, { method: 'POST', body: image, headers: { 'content-type': 'image/png' } });
    const { id } = await res.json();
    const events = await fetch(`${url}/v1/jobs/${id}/events`);
    await events.text(); // the stream ends after the final event
    const out = await fetch(`${url}/v1/jobs/${id}/result`);
    await out.arrayBuffer();
    if (out.status !== 200) throw new Error(`result HTTP ${out.status}`);
  },
};

/** Runs `n` calls of `fn` with `c` in flight; returns per-call latencies (ms) and the wall time. */
async function block(fn, n, c) {
  const lat = [];
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: c }, async () => {
      while (next < n) {
        next++;
        const t = performance.now();
        await fn();
        lat.push(performance.now() - t);
      }
    }),
  );
  return { lat, wallMs: performance.now() - t0 };
}

const round3 = (x) => Math.round(x * 1000) / 1000;

for (const fn of Object.values(modes)) for (let i = 0; i < 5; i++) await fn(); // warm-up: plans, allocator, connections

const results = {};
for (const c of levels) {
  const acc = Object.fromEntries(Object.keys(modes).map((m) => [m, { lat: [], wallMs: 0 }]));
  const per = Math.max(c, Math.round(requests / rounds));
  for (let r = 0; r < rounds; r++) {
    for (const [name, fn] of Object.entries(modes)) {
      const b = await block(fn, per, c);
      acc[name].lat.push(...b.lat);
      acc[name].wallMs += b.wallMs;
    }
  }
  results[`concurrency${c}`] = Object.fromEntries(
    Object.entries(acc).map(([name, a]) => {
      const s = [...a.lat].sort((x, y) => x - y);
      return [
        name,
        {
          requests: s.length,
          requestsPerSecond: round3(s.length / (a.wallMs / 1000)),
          p50Ms: round3(percentile(s, 50)),
          p95Ms: round3(percentile(s, 95)),
          p99Ms: round3(percentile(s, 99)),
          meanMs: round3(s.reduce((x, y) => x + y, 0) / s.length),
        },
      ];
    }),
  );
  const d = results[`concurrency${c}`].direct;
  for (const name of ['http', 'httpJob']) {
    const h = results[`concurrency${c}`][name];
    h.overhead = {
      p50Ms: round3(h.p50Ms - d.p50Ms),
      p50Ratio: round3(h.p50Ms / d.p50Ms),
      p99Ratio: round3(h.p99Ms / d.p99Ms),
      throughputRatio: round3(h.requestsPerSecond / d.requestsPerSecond),
    };
  }
}

await server.close(0);
await engine.dispose();
const report = {
  benchmark: 'server-overhead',
  date: new Date().toISOString(),
  machine: { cpu: os.cpus()[0]?.model, cpus: os.cpus().length, node: process.version, loadavg: os.loadavg().map(round3) },
  model: v.sd ? { sd: v.sd, xpsr: v.xpsr } : path.relative(root, v.model) || v.model,
  device: v.device,
  input: `${size}x${size} PNG`,
  options: { ...options, prompts: undefined },
  rounds,
  results,
};
const text = JSON.stringify(report, null, 2);
process.stdout.write(`${text}\n`);
mkdirSync(path.join(root, '.bench'), { recursive: true });
const file = path.join(root, '.bench', `bench-server-${report.date.replace(/[:.]/g, '-')}.json`);
writeFileSync(file, text);
process.stderr.write(`saved ${path.relative(root, file)}\n`);
