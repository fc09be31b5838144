// One captioner per XPSR caption (the paper: LLaVA for the high-level caption, a Q-Instruct model for the
// low-level one) behind the one-captioner interface.
import { XpsrError } from '../errors.js';
import { prepareImage } from './image.js';
import type { CaptionImage, CaptionOptions, Captioner, CaptionerPair } from './types.js';

/**
 * Answers instruction 1 (the low-level one in XPSR order) with `low` and every other instruction with
 * `high`. When both are the same object one call answers everything (a LLaVA captioner encodes the image
 * once); otherwise the image is decoded once and each captioner is asked in turn (its instruction as
 * instruction 0). dispose() disposes both (once when they are the same object).
 */
export class HighLowCaptioner implements Captioner {
  readonly kind = 'pair';
  readonly id: string;
  readonly cacheable: boolean;
  readonly high: Captioner;
  readonly low: Captioner;

  constructor(pair: CaptionerPair) {
    this.high = pair.high;
    this.low = pair.low;
    this.id = pair.high === pair.low ? pair.high.id : `pair:${pair.high.id}|${pair.low.id}`;
    this.cacheable = pair.high.cacheable && pair.low.cacheable;
  }

  async caption(image: CaptionImage, instructions: readonly string[], options: CaptionOptions = {}): Promise<string[]> {
    if (!Array.isArray(instructions)) throw new XpsrError('ERR_INVALID_ARGUMENT', 'instructions must be an array of strings');
    if (this.high === this.low || instructions.length < 2) return this.high.caption(image, instructions, options);
    const img = await prepareImage(image, options.name);
    const named = { ...options, name: options.name ?? img.source.name };
    const highSlots = instructions.map((_, i) => i).filter((i) => i !== 1);
    const highAnswers = await this.high.caption(
      img,
      highSlots.map((i) => instructions[i]!),
      named,
    );
    const [lowAnswer] = await this.low.caption(img, [instructions[1]!], named);
    const out = new Array<string>(instructions.length);
    highSlots.forEach((i, k) => {
      out[i] = highAnswers[k] ?? '';
    });
    out[1] = lowAnswer ?? '';
    return out;
  }

  async dispose(): Promise<void> {
    await this.high.dispose();
    if (this.low !== this.high) await this.low.dispose();
  }
}
