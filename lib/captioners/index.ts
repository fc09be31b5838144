// Captioning: the XPSR high-level and low-level prompts from an image. Captioners fail with XpsrError.
export type {
  Captioner,
  CaptionerPair,
  CaptionImage,
  CaptionOptions,
  GenerationOptions,
  RawImage,
  XpsrCaptioner,
} from './types.js';
export {
  firstLineLeftStripped,
  IMAGE_PLACEHOLDER,
  INSTRUCTION_PLACEHOLDER,
  LLAVA15_PROMPT_TEMPLATE,
  postprocessCaption,
  splitPromptTemplate,
  XPSR_HIGH_LEVEL_INSTRUCTION,
  XPSR_INSTRUCTIONS,
  XPSR_LOW_LEVEL_INSTRUCTION,
  XPSR_PAPER_LOW_LEVEL_INSTRUCTION,
  type XpsrInstructions,
} from './instructions.js';
export { LLAVA_DEFAULT_MAX_TOKENS, LlavaCaptioner, type LlavaCaptionerOptions, type LlavaCaptionResult } from './llava.js';
export { HttpCaptioner, type HttpCaptionerOptions, parseChatCompletion, resolveChatCompletionsUrl } from './http.js';
export {
  FixedCaptioner,
  type FixedCaptionerOptions,
  SidecarCaptioner,
  type SidecarCaptionerOptions,
  XPSR_SIDECAR_DIRS,
} from './fixed.js';
export { CaptionCache, type CaptionCacheOptions, CachingCaptioner } from './cache.js';
export { HighLowCaptioner } from './pair.js';
export {
  type CaptionerFactoryOptions,
  type CaptionerKind,
  captionXpsr,
  createCaptionerFromOptions,
  type XpsrCaptionOptions,
  type XpsrCaptions,
} from './factory.js';
export type { CaptionerVariant } from './native.js';
