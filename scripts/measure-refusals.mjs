#!/usr/bin/env node
// How fast, and with how little memory, hostile images are refused: each corpus image that must be refused
// from its header (thin strips, decompression bombs, huge declared sizes, SVG bombs) through XPSR.upscale
// on the tiny test model. Prints JSON: per image the error code, milliseconds and resident-memory growth.
//   npm run build && node scripts/measure-refusals.mjs
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { XPSR } from '../dist/lib/index.js';
import { imageCases } from '../test/corpus/images.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const xpsr = await XPSR.load({ model: path.join(root, 'test', 'fixtures', 'model'), device: 'cpu', onNotice: () => {} });
const results = {};
for (const c of imageCases) {
  const bytes = await c.bytes();
  const rss0 = process.memoryUsage().rss;
  const t0 = performance.now();
  try {
    await xpsr.upscale(bytes, { name: c.name });
    results[c.name] = { code: null };
  } catch (e) {
    results[c.name] = {
      code: e.code,
      expected: c.code,
      ms: +(performance.now() - t0).toFixed(1),
      rssGrowthMiB: +((process.memoryUsage().rss - rss0) / 2 ** 20).toFixed(1),
    };
  }
}
await xpsr.dispose();
process.stdout.write(
  JSON.stringify({ machine: { node: process.version, platform: `${process.platform}-${process.arch}` }, results }, null, 1) + '\n',
);
