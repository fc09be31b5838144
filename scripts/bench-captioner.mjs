#!/usr/bin/env node
// Captioning latency on this machine, split into image encode (CLIP + projector), prefill (image
// embeddings + prompt text) and per generated token, with a random-weight model of LLaVA-1.5-7B shape
// (Q4_0 language model ~3.8 GB + F16 mmproj ~0.6 GB), generated locally, never downloaded. Not run by tests.
//
//   node scripts/bench-captioner.mjs [--size 7b|small|tiny] [--tokens 16] [--runs 1] [--threads N]
//        [--context 1024] [--gpu auto|cpu|cuda|vulkan] [--separate] [--models DIR] [--out FILE]
//
// Needs a clone (the model generator is a test helper, test/helpers/gguf-random-llava.mjs), `npm run build`
// (dist/) and the captioner addon. Model files are cached in --models (default
// .bench/captioner-models, ~4.5 GB for 7b) and reused. Writes JSON to --out (default .bench/captioner-<size>.json).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values: a } = parseArgs({
  options: {
    size: { type: 'string', default: '7b' },
    tokens: { type: 'string', default: '16' },
    runs: { type: 'string', default: '1' },
    threads: { type: 'string' },
    context: { type: 'string', default: '1024' },
    gpu: { type: 'string', default: 'auto' },
    separate: { type: 'boolean', default: false },
    models: { type: 'string' },
    out: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (a.help) {
  process.stdout.write(
    fs
      .readFileSync(fileURLToPath(import.meta.url), 'utf8')
      .split('\n')
      .slice(1, 12)
      .join('\n') + '\n',
  );
  process.exit(0);
}
const dist = (p) => import(path.join(ROOT, 'dist', 'lib', 'captioners', p));
const { createRandomLlava } = await import(path.join(ROOT, 'test', 'helpers', 'gguf-random-llava.mjs'));
const { LlavaCaptioner } = await dist('llava.js');
const { XPSR_INSTRUCTIONS } = await dist('instructions.js');

const log = (m) => process.stderr.write(`[bench-captioner] ${m}\n`);
const size = a.size;
const tokens = Number(a.tokens);
const runs = Number(a.runs);
const modelsDir = path.resolve(a.models ?? path.join(ROOT, '.bench', 'captioner-models'));
const out = path.resolve(a.out ?? path.join(ROOT, '.bench', `captioner-${size}.json`));

let t0 = Date.now();
let lastPct = -1;
const files = createRandomLlava({
  dir: modelsDir,
  size,
  reuse: true,
  onProgress: (file, w, total) => {
    const pct = Math.floor((w / total) * 20) * 5;
    if (pct !== lastPct) {
      lastPct = pct;
      log(`writing ${path.basename(file)}: ${pct}%`);
    }
  },
});
const genSeconds = (Date.now() - t0) / 1000;
const sizes = { model: fs.statSync(files.model).size, mmproj: fs.statSync(files.mmproj).size };
log(`models ready in ${genSeconds.toFixed(1)} s (${(sizes.model / 2 ** 30).toFixed(2)} GiB + ${(sizes.mmproj / 2 ** 30).toFixed(2)} GiB)`);

// a 336x336 photo-like gradient (the CLIP input size of llava-1.5)
const W = 336;
const H = 336;
const rgb = new Uint8Array(W * H * 3);
for (let y = 0; y < H; y++)
  for (let x = 0; x < W; x++) {
    const i = (y * W + x) * 3;
    rgb[i] = (x * 3) & 255;
    rgb[i + 1] = (y * 5) & 255;
    rgb[i + 2] = ((x ^ y) * 7) & 255;
  }
const image = { data: rgb, width: W, height: H };

t0 = Date.now();
const threads = a.threads ? Number(a.threads) : Math.max(1, os.availableParallelism?.() ?? os.cpus().length);
const cap = await LlavaCaptioner.create({
  model: files.model,
  mmproj: files.mmproj,
  threads,
  contextSize: Number(a.context),
  gpu: a.gpu === 'cpu' ? false : a.gpu,
  maxTokens: tokens,
  minTokens: tokens,
});
const loadMs = Date.now() - t0;
log(`loaded on ${cap.variant} in ${(loadMs / 1000).toFixed(1)} s (${threads} threads)`);

const instr = [XPSR_INSTRUCTIONS.high, XPSR_INSTRUCTIONS.low];
const results = [];
const summarize = (r, mode) => {
  const s = r.stats;
  const gen = s.answers.reduce((x, y) => x + y.generateMs, 0);
  const genTok = s.answers.reduce((x, y) => x + y.generatedTokens, 0);
  const textPrefill = s.prefixPrefillMs + s.answers.reduce((x, y) => x + y.prefillMs, 0);
  return {
    mode,
    totalMs: s.totalMs,
    imagePasses: s.imagePasses,
    imageTokens: s.imageTokens,
    decodeImageMs: s.decodeImageMs,
    encodeMs: s.encodeMs,
    imagePrefillMs: s.imagePrefillMs,
    imagePrefillMsPerToken: s.imagePrefillMs / Math.max(1, s.imageTokens * s.imagePasses),
    textPrefillMs: textPrefill,
    promptTokens: s.answers.map((x) => x.promptTokens),
    generatedTokens: genTok,
    generateMs: gen,
    perTokenMs: gen / Math.max(1, genTok),
    answers: s.answers,
  };
};
for (let i = 0; i < runs; i++) {
  const r = await cap.captionDetailed(image, instr, { sharePrefix: true });
  results.push(summarize(r, 'shared-prefix'));
  log(`run ${i + 1}: ${JSON.stringify(results.at(-1), (k, v) => (typeof v === 'number' ? Math.round(v * 10) / 10 : v))}`);
  if (a.separate) {
    const s = await cap.captionDetailed(image, instr, { sharePrefix: false });
    results.push(summarize(s, 'separate-passes'));
    log(`run ${i + 1} (separate): total ${(s.stats.totalMs / 1000).toFixed(1)} s`);
  }
}
await cap.dispose();

const report = {
  bench: 'captioner',
  size,
  date: new Date().toISOString(),
  machine: {
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model,
    memGiB: Math.round(os.totalmem() / 2 ** 30),
    platform: `${process.platform}-${process.arch}`,
    node: process.version,
  },
  variant: cap.variant,
  threads,
  contextSize: Number(a.context),
  tokensPerAnswer: tokens,
  files: { ...sizes, imageTokens: files.imageTokens },
  modelGenerationSeconds: genSeconds,
  loadMs,
  runs: results,
};
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, JSON.stringify(report, null, 2) + '\n');
log(`wrote ${out}`);
process.stdout.write(JSON.stringify(report) + '\n');
