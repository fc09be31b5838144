// `xpsr bench` as users run it, tiny: the JSON report has one row per batch size with throughput, the
// ratio to batch 1, latency percentiles, stage times and memory; real weights work as synthetic ones;
// usage errors exit 2. No timing is asserted (speeds are measured by the bench, not by tests). The
// networks are the demo's tiny ones (--synthetic-model demo): the SD-1.5-size synthetic model takes about
// 8 GB and a minute to generate on this CPU; docs/benchmarks.md records a run of it.
import test from 'ava';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { model, root } from './helpers/fixtures.mjs';

const bin = path.join(root, 'dist', 'lib', 'cli', 'main.js');
function xpsr(args) {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [bin, ...args]);
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => p.kill(), 120_000);
    p.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

function checkReport(t, report, batches) {
  t.is(report.tool, 'xpsr bench');
  t.is(report.device, 'cpu');
  t.deepEqual(report.latent, [8, 8]);
  t.is(report.steps, 1);
  t.true(report.weightBytes > 0);
  t.deepEqual(
    report.rows.map((r) => r.batch),
    batches,
  );
  for (const r of report.rows) {
    t.is(r.images, 4);
    t.true(r.imagesPerSec > 0 && Number.isFinite(r.imagesPerSec));
    t.true(r.latencyMs.p50 > 0 && r.latencyMs.p50 <= r.latencyMs.p95 && r.latencyMs.p95 <= r.latencyMs.p99);
    for (const k of ['text', 'encode', 'denoise', 'decode', 'colorfix']) t.true(r.stagesMs[k] >= 0, k);
    t.true(r.stagesMs.denoise > 0);
    t.true(r.batches >= Math.ceil(r.images / r.batch));
    t.true(r.meanBatchSize >= 1 && r.meanBatchSize <= r.batch);
    t.true(r.memory.largestPlanBytes > 0);
    t.is(r.memory.plannedPeakBytes, report.weightBytes + r.memory.largestPlanBytes);
    t.is(r.memory.deviceUsedPeakBytes, null); // CPU
  }
  t.is(report.rows[0].ratioVsBatch1, 1);
  const b2 = report.rows.find((r) => r.batch === 2);
  t.is(b2.ratioVsBatch1, b2.imagesPerSec / report.rows[0].imagesPerSec);
  t.true(b2.meanBatchSize > 1, 'two calls in flight formed batches of two');
}

test('bench --synthetic --json: a row per batch size, ratios to batch 1, latency, stages, memory', async (t) => {
  const r = await xpsr([
    'bench',
    '--synthetic',
    '--synthetic-model',
    'demo',
    '--device',
    'cpu',
    '--latent',
    '8',
    '--steps',
    '1',
    '--batch',
    '1,2',
    '--json',
  ]);
  t.is(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  t.regex(report.model, /synthetic demo/);
  checkReport(t, report, [1, 2]);
});

test('bench on real weights prints the table', async (t) => {
  const r = await xpsr(['bench', '--model', model, '--device', 'cpu', '--latent', '8', '--steps', '1', '--batch', '2,1', '--images', '4']);
  t.is(r.status, 0, r.stderr);
  t.regex(r.stdout, /batch\s+conc\s+images\s+img\/s\s+x b1/);
  t.regex(r.stdout, /^\s+1\s+1\s+4\s+[\d.]+\s+1\.00x/m);
  t.regex(r.stdout, /^\s+2\s+2\s+4\s+[\d.]+\s+[\d.]+x/m);
});

test('bench usage errors exit 2 and name the flag', async (t) => {
  let r = await xpsr(['bench']);
  t.is(r.status, 2);
  t.regex(r.stderr, /--synthetic/);
  r = await xpsr(['bench', '--synthetic', '--batch', '1,0']);
  t.is(r.status, 2);
  t.regex(r.stderr, /--batch/);
  r = await xpsr(['bench', '--synthetic', '--size', '100x64']);
  t.is(r.status, 2);
  t.regex(r.stderr, /--size/);
  r = await xpsr(['bench', '--help']);
  t.is(r.status, 0);
  t.regex(r.stdout, /--synthetic-model/);
});
