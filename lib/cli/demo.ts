/**
 * `xpsr demo [-o FILE] [--device D]`: runs the whole pipeline (decode, preprocess, text, VAE, ControlNet +
 * UNet loop, decode, colour fix, encode) on a bundled photograph with a TINY model whose weights are seeded
 * synthetic values (lib/demo/model.ts; no weight files are shipped). It proves the installation works end to
 * end; it is not a restoration (the tiny model is untrained).
 */
import { existsSync } from 'node:fs';
import { demoDataDir, demoImage, makeDemoComponents } from '../demo/model.js';
import { XPSR } from '../xpsr.js';
import { XpsrError } from '../errors.js';
import { EXIT, numberFlag, parseFlags } from './common.js';

export async function runDemoCommand(argv: string[]): Promise<number> {
  const { values: v } = parseFlags('demo', argv, {
    output: { type: 'string', short: 'o' },
    device: { type: 'string' },
    steps: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  });
  if (v.help) {
    process.stdout.write('Usage: xpsr demo [-o xpsr-demo.png] [--device auto|cpu|cuda] [--steps N]\n');
    return EXIT.OK;
  }
  const steps = numberFlag('--steps', v.steps, true) ?? 10;
  const image = demoImage;
  if (!existsSync(image)) throw new XpsrError('ERR_WEIGHTS_MISSING', `the bundled demo data is missing (${demoDataDir})`);
  const output = v.output ?? 'xpsr-demo.png';
  const say = (s: string) => process.stdout.write(s + '\n');
  say('xpsr demo: INSTALLATION CHECK ONLY. It runs every stage of the pipeline with a tiny model whose');
  say('weights are random, so the output is NOT a real restoration. Use real SD-1.5 + XPSR weights for that.');
  const t0 = performance.now();
  const xpsr = await XPSR.loadFrom({ device: v.device ?? 'auto', onNotice: (m) => say(m) }, makeDemoComponents);
  try {
    say(`models loaded on ${xpsr.device} (${xpsr.deviceDescription})`);
    const r = await xpsr.upscale(image, {
      steps,
      seed: 1,
      processSize: 256,
      prompts: { high: 'a cup of coffee on a saucer', low: 'the image is small and blurry' },
      onProgress: (e) => e.stage === 'denoise' && e.step > 0 && process.stdout.write(`\r  denoising step ${e.step}/${e.total}`),
    });
    process.stdout.write('\n');
    await r.toFile(output);
    const t = r.timingsMs;
    say(
      `wrote ${output}: ${r.width}x${r.height} from the 64x48 input (processed at ${r.processed.width}x${r.processed.height}), ` +
        `${steps} steps, seed ${r.seed}`,
    );
    say(
      `timings (ms): text ${t.text.toFixed(0)}, encode ${t.encode.toFixed(0)}, denoise ${t.denoise.toFixed(0)}, decode ${t.decode.toFixed(0)}, ` +
        `total ${t.total.toFixed(0)}; whole demo ${(performance.now() - t0).toFixed(0)} ms`,
    );
    say('demo: OK (installation check passed)');
  } finally {
    await xpsr.dispose();
  }
  return EXIT.OK;
}
