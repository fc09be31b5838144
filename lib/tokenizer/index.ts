/**
 * CLIP tokenizer (Stable Diffusion 1.5 / HF slow CLIPTokenizer with ftfy) and the ftfy text repair it uses.
 */
export { ClipTokenizer } from './clip-tokenizer.js';
export type { ClipTokenizerConfig, ClipTokenizerSources, TokenizeResult } from './clip-tokenizer.js';
export { fixText, fixEncoding, unescapeHtml } from './ftfy.js';
export { isBad as looksLikeMojibake, badness as mojibakeBadness } from './badness.js';
