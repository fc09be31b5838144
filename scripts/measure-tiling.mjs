#!/usr/bin/env node
// Measures how much latent tiling (Gaussian-blended tiles, as the official pipeline) changes the output
// on an image small enough to run both ways, with the bundled tiny model (CPU). Prints JSON.
//   node scripts/measure-tiling.mjs [--tile 16] [--overlap 4] [--steps 4] [--image FILE]
//        [--model DIR | --sd DIR --xpsr DIR] [--device cpu|cuda] [--process-size 128]
// Defaults: the bundled tiny model and a bundled 64x48 photo.
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { XPSR } from '../dist/lib/index.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values: v } = parseArgs({
  options: {
    tile: { type: 'string' },
    overlap: { type: 'string' },
    steps: { type: 'string' },
    image: { type: 'string' },
    model: { type: 'string' },
    sd: { type: 'string' },
    xpsr: { type: 'string' },
    device: { type: 'string' },
    'process-size': { type: 'string' },
  },
});
const tile = Number(v.tile ?? 16);
const overlap = Number(v.overlap ?? 4);
const steps = Number(v.steps ?? 4);
const tiny = !v.model && !v.sd;
const xpsr = await XPSR.load({
  model: tiny ? path.join(root, 'test', 'fixtures', 'model') : v.model,
  sd: v.sd,
  xpsr: v.xpsr,
  device: v.device ?? 'cpu',
  onNotice: () => {},
});
const image = v.image ?? path.join(root, 'test', 'fixtures', 'images', 'coffee_64x48.png');
const common = {
  steps,
  seed: 5,
  processSize: Number(v['process-size'] ?? 128),
  colorFix: 'none',
  prompts: { high: 'a cup of coffee', low: 'blurry' },
};
const untiled = await xpsr.upscale(image, { ...common, tiling: 'off' });
const tiled = await xpsr.upscale(image, { ...common, tiling: { mode: 'on', tileSize: tile, overlap } });
let max = 0;
let sum = 0;
for (let i = 0; i < untiled.image.length; i++) {
  const d = Math.abs(untiled.image[i] - tiled.image[i]);
  max = Math.max(max, d);
  sum += d;
}
process.stdout.write(
  JSON.stringify(
    {
      model: tiny ? 'bundled tiny random-weight model (test/fixtures/model)' : (v.model ?? `${v.sd} + ${v.xpsr}`),
      image: path.basename(image),
      output: `${untiled.width}x${untiled.height}`,
      processed: untiled.processed,
      device: xpsr.device,
      steps,
      tile,
      overlap,
      tiles: tiled.tiled?.tiles,
      max_abs_u8: max,
      mean_abs_u8: sum / untiled.image.length,
    },
    null,
    1,
  ) + '\n',
);
await xpsr.dispose();
