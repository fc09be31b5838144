// Shared fixtures of the captioner tests: random-weight LLaVA GGUF pairs written by the project's own GGUF
// writer into a temporary folder, and small test images.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { createRandomLlava } from '../../dist/lib/captioners/random-llava.js';
import { encodePngRgb } from '../../dist/lib/captioners/image.js';

export const HIGH = 'Please provide a descriptive summary of the content of this image.';
export const LOW = 'Describe and evaluate the quality of the image.';

/** True when the captioner was deliberately disabled (XPSR_CAPTIONER=off): llava tests are skipped then. */
export const captionerDisabled = ['off', '0', 'false', 'disabled'].includes(String(process.env.XPSR_CAPTIONER ?? '').toLowerCase());

export function tempDir(prefix = 'xpsr-captioner-') {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  return { dir, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

export function makeModels(dir, size = 'tiny', seed = 1234) {
  return createRandomLlava({ dir, size, seed });
}

/** A deterministic RGB gradient. */
export function testRgb(width = 40, height = 30, seed = 0) {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3;
      data[i] = (x * 7 + seed) & 255;
      data[i + 1] = (y * 11 + seed * 3) & 255;
      data[i + 2] = ((x + y) * 5 + seed * 7) & 255;
    }
  }
  return { data, width, height };
}

export function writeTestPng(file, seed = 0, width = 40, height = 30) {
  const { data } = testRgb(width, height, seed);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, encodePngRgb(data, width, height));
  return file;
}
