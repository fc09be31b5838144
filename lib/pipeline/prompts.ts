/**
 * The prompts of the official run (docs/architecture.md §7.2, §7.4) and how the classifier-free-guidance
 * rows are formed. Row order everywhere: [unconditional, conditional].
 */

/** Appended to the high-level caption (configs/xpsr_test.yaml). */
export const OFFICIAL_ADDED_PROMPT = 'clean, high-resolution, 8k, high quality, clear text.';
/** The high-level negative prompt (configs/xpsr_test.yaml). */
export const OFFICIAL_NEGATIVE_PROMPT = 'blurry, dotted, noise, raster lines, unclear, lowres, over-smoothed.';
/** The low-level "negative" text hard-coded in pipelines/pipeline_xpsr.py. */
export const LOWLEVEL_NEGATIVE_PROMPT = 'high resolution, best quality, clear';

/** The two captions of an image: high-level content and low-level quality. */
export interface Prompts {
  high: string;
  low: string;
}

/**
 * How the unconditional row gets its low-level context:
 *  - 'official': the fixed text "high resolution, best quality, clear" (what the code does);
 *  - 'paper': the real low-level caption is kept (Eq. 6 of the paper; only c_h is replaced).
 */
export type LowLevelGuidance = 'official' | 'paper';

export interface CfgTexts {
  /** Texts for the high-level context, one per row. */
  high: string[];
  /** Texts for the low-level context, one per row. */
  low: string[];
}

/** test.py builds `caption + " " + added_prompt` (a leading space is harmless to CLIP). */
export function highLevelPrompt(caption: string, addedPrompt: string): string {
  return addedPrompt ? `${caption} ${addedPrompt}` : caption;
}

/** The texts of each CFG row; with guidance <= 1 there is one (conditional) row. */
export function cfgTexts(
  prompts: Prompts,
  opts: { addedPrompt: string; negativePrompt: string; guidance: boolean; lowLevelGuidance: LowLevelGuidance },
): CfgTexts {
  const high = highLevelPrompt(prompts.high, opts.addedPrompt);
  if (!opts.guidance) return { high: [high], low: [prompts.low] };
  const lowNeg = opts.lowLevelGuidance === 'paper' ? prompts.low : LOWLEVEL_NEGATIVE_PROMPT;
  return { high: [opts.negativePrompt, high], low: [lowNeg, prompts.low] };
}
