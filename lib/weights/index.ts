/**
 * Weights as users have them: Stable Diffusion 1.5 as a diffusers folder, one original-layout file
 * (.safetensors fp32/fp16/bf16 or .ckpt) or a Hugging Face repo id in the local cache; diffusers variants
 * (fp16). The engine reads the files (native/engine/sources.h, native/engine/io/checkpoint_map.h); this
 * layer resolves options to paths, supplies the bundled tokenizer and describes files for `xpsr doctor`.
 */
export { resolveWeights, missingParts, type ResolvedWeights, type WeightsOptions, type ComponentSource } from './resolve.js';
export { isRepoId, hubCacheDirs, resolveRepoSnapshot, type Snapshot } from './hf-cache.js';
export { bundledTokenizer, loadTokenizer, BUNDLED_TOKENIZER_DIR } from './tokenizer.js';
export { checkWeightsReport, describeSingleFile } from './describe.js';
