/**
 * The CLIP tokenizer of Stable Diffusion 1.5 shipped with the package (data/clip-tokenizer/: the SD-1.5
 * tokenizer folder with vocab.json and merges.txt gzipped, derived from OpenAI's CLIP vocabulary, MIT
 * license). Single-file checkpoints carry no tokenizer; this is the one they were trained with.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { XpsrError } from '../errors.js';
import { packageRoot } from '../native.js';
import { ClipTokenizer } from '../tokenizer/index.js';

/** Folder of the bundled tokenizer files. */
export const BUNDLED_TOKENIZER_DIR = path.join(packageRoot, 'data', 'clip-tokenizer');

/** The bundled SD-1.5 CLIP tokenizer. */
export function bundledTokenizer(): ClipTokenizer {
  const file = (name: string) => path.join(BUNDLED_TOKENIZER_DIR, name);
  try {
    const vocab = gunzipSync(readFileSync(file('vocab.json.gz'))).toString('utf8');
    const merges = gunzipSync(readFileSync(file('merges.txt.gz'))).toString('utf8');
    const config = JSON.parse(readFileSync(file('tokenizer_config.json'), 'utf8')) as object;
    return ClipTokenizer.fromFiles(vocab, merges, config, {
      vocab: file('vocab.json.gz'),
      merges: file('merges.txt.gz'),
      config: file('tokenizer_config.json'),
    });
  } catch (e) {
    if (e instanceof XpsrError) throw e;
    throw new XpsrError(
      'ERR_WEIGHTS_MISSING',
      `the CLIP tokenizer shipped with xpsr-native is unreadable (${BUNDLED_TOKENIZER_DIR}): ${(e as Error).message}; reinstall the package`,
    );
  }
}

/** The tokenizer of a resolved `sd`: its folder, or the bundled one. */
export async function loadTokenizer(dir: string | undefined): Promise<ClipTokenizer> {
  return dir ? ClipTokenizer.fromDirectory(dir) : bundledTokenizer();
}
