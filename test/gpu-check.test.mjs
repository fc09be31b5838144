// scripts/gpu-check.sh's report generation (scripts/gpu_report.py) on canned stage logs and benchmark files,
// without a GPU: the script's own --self-test checks its parse, and this test reads the report it wrote.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { packageRoot } from '../dist/lib/native.js';

const py = ['python3', 'python'].find((c) => spawnSync(c, ['--version']).status === 0);
const pyTest = py ? test : test.skip;
const dir = mkdtempSync(path.join(os.tmpdir(), 'xpsr-gpucheck-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

pyTest(`gpu-check --self-test builds the report from canned logs${py ? '' : ' [skipped: no python3]'}`, (t) => {
  const r = spawnSync('bash', [path.join(packageRoot, 'scripts', 'gpu-check.sh'), '--self-test', dir], {
    encoding: 'utf8',
    env: { ...process.env, PYTHON: py },
  });
  t.is(r.status, 0, `${r.stdout}\n${r.stderr}`);
  t.regex(r.stdout, /self-test: ok/);
  const md = readFileSync(path.join(dir, 'report', 'report.md'), 'utf8');
  const summary = JSON.parse(readFileSync(path.join(dir, 'report', 'summary.json'), 'utf8'));
  // a test's case lines are printed before its status line: they belong to that test, not the previous one
  const lin = summary.op_tests.tests.find((x) => x.name === 'cuda_op_linear_unet_projections');
  t.is(lin.cases.length, 2);
  t.is(lin.cases[0].tol_used_pct, 41.5);
  t.deepEqual(summary.op_tests.tests.find((x) => x.name === 'cuda_op_missing_device_is_device_unavailable').cases, []);
  t.regex(md, /\| cuda_op_conv3x3_unet_levels \| FAIL \| 630 \| 1 \| 133\.0% \| native\/cuda\/cuda_test_util\.h:150/);
  t.regex(md, /\| cuda_op_conv3x3_unet_levels \| 3x3 320 64x64 .* \| 133\.0% \|/);
  // verdict lines: the questions the first GPU run must answer
  t.regex(md, /20-step 512x512 denoising loop: 452\.0 ms/);
  t.regex(md, /peak device memory: 5\.00 GiB/);
  t.regex(md, /CUDA graph fallbacks: op bench 0, full network 0/);
  t.regex(md, /kernel launches per CFG step: 1234/);
  // per op: ours vs torch, vs legacy, vs floor (compute-bound conv: 15.1 GFLOP at 780 TFLOP/s = 0.0194 ms)
  t.regex(
    md,
    /\| conv3x3 320->320 64x64 s1 \| 0\.0400 \| 128x128\/4w\(64x64\) x2 \| 0\.0500 \| 128x64\/4w\(64x32\) x1 \| 0\.80 \| 0\.0250 \| cudnn channels_last \| 1\.60 \*\* \| 0\.0194 \| compute \| 48% \|/,
  );
  t.regex(md, /compute-sanitizer memcheck: failed \(30 s\), 2 errors/);
  t.regex(md, /\| nvcc \| 13\.0 \| >= 12\.0 \| ok \|/);
});
