// Captioning: the XPSR high-level and low-level prompts from an image.
export type { Captioner, CaptionImage, CaptionOptions, GenerationOptions, RawImage } from './types.js';
export { CaptionError, type CaptionErrorCode } from './errors.js';
export {
  firstLineLeftStripped, IMAGE_PLACEHOLDER, INSTRUCTION_PLACEHOLDER, LLAVA15_PROMPT_TEMPLATE, postprocessCaption,
  splitPromptTemplate, XPSR_HIGH_LEVEL_INSTRUCTION, XPSR_INSTRUCTIONS, XPSR_LOW_LEVEL_INSTRUCTION,
  XPSR_PAPER_LOW_LEVEL_INSTRUCTION, type XpsrInstructions,
} from './instructions.js';
export { LLAVA_DEFAULT_MAX_TOKENS, LlavaCaptioner, type LlavaCaptionerOptions, type LlavaCaptionResult } from './llava.js';
export { HttpCaptioner, type HttpCaptionerOptions, parseChatCompletion, resolveChatCompletionsUrl } from './http.js';
export {
  FixedCaptioner, type FixedCaptionerOptions, SidecarCaptioner, type SidecarCaptionerOptions, XPSR_SIDECAR_DIRS,
} from './fixed.js';
export { CaptionCache, type CaptionCacheOptions, CachingCaptioner } from './cache.js';
export {
  type CaptionerFactoryOptions, type CaptionerKind, captionXpsr, createCaptionerFromOptions, type XpsrCaptionOptions,
  type XpsrCaptions,
} from './factory.js';
export {
  CAPTION_HELP, CAPTIONER_CLI_HELP, CAPTIONER_CLI_OPTIONS, type CaptionCommandIo, captionerOptionsFromArgs, runCaptionCommand,
  xpsrInstructionsFromArgs,
} from './cli.js';
export { createRandomLlava, type RandomLlavaFiles, type RandomLlavaOptions } from './random-llava.js';
export { captionerAddonDir, type CaptionerVariant } from './native.js';
