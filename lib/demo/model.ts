/**
 * The tiny model of `xpsr demo` (an installation check): the configs of data/demo/model.json with seeded
 * synthetic weights made by the engine (no weight files are shipped), the CLIP tokenizer from the gzipped
 * merges, and a bundled 64x48 photograph. The output is not a restoration: the weights are random.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Engine } from '../engine/engine.js';
import { packageRoot } from '../native.js';
import type { LoadedComponents } from '../xpsr.js';
import { clipTokenizerFromGzippedMerges } from './tokenizer.js';

export const demoDataDir = path.join(packageRoot, 'data', 'demo');
export const demoImage = path.join(demoDataDir, 'coffee_64x48.png');

interface DemoModelFile {
  seed: number;
  text_encoder: object;
  vae: object;
  unet: object;
  controlnet: object;
  scheduler: Record<string, unknown>;
  tokenizer: Record<string, unknown>;
}

/** Makes the demo model's components on `engine` (for XPSR.loadFrom). */
export async function makeDemoComponents(engine: Engine): Promise<LoadedComponents> {
  const m = JSON.parse(readFileSync(path.join(demoDataDir, 'model.json'), 'utf8')) as DemoModelFile;
  const tokenizer = clipTokenizerFromGzippedMerges(path.join(demoDataDir, 'clip-merges.txt.gz'), m.tokenizer);
  // a different seed per network, as independent random initialisations would be
  const [textEncoder, vae, unet, controlnet] = await Promise.all([
    engine.loadSynthetic('text_encoder', m.text_encoder, m.seed),
    engine.loadSynthetic('vae', m.vae, m.seed + 1),
    engine.loadSynthetic('unet', m.unet, m.seed + 2),
    engine.loadSynthetic('controlnet', m.controlnet, m.seed + 3),
  ]);
  return {
    tokenizer,
    textEncoder: textEncoder as LoadedComponents['textEncoder'],
    vae: vae as LoadedComponents['vae'],
    unet: unet as LoadedComponents['unet'],
    controlnet: controlnet as LoadedComponents['controlnet'],
    schedulerConfig: m.scheduler,
  };
}
