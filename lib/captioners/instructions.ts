// XPSR's MLLM instructions, the LLaVA-1.5 prompt format and the caption post-processing
// (docs/architecture.md §8).

/** High-level (semantic) instruction of the paper and the official captioning code (llava-1.5-7b). */
export const XPSR_HIGH_LEVEL_INSTRUCTION = 'Please provide a descriptive summary of the content of this image.';
/**
 * Low-level (quality) instruction of the official code (it used InternLM-XComposer-VL Q-Instruct; with
 * LLaVA this instruction is the closest available equivalent).
 */
export const XPSR_LOW_LEVEL_INSTRUCTION = 'Describe and evaluate the quality of the image.';
/** The paper's wording of the low-level instruction (Sec. 3.3), for users who prefer it. */
export const XPSR_PAPER_LOW_LEVEL_INSTRUCTION =
  'Please describe the quality of this image and evaluate it based on factors such as clarity, color, noise, and lighting';

export interface XpsrInstructions {
  high: string;
  low: string;
}

export const XPSR_INSTRUCTIONS: Readonly<XpsrInstructions> = Object.freeze({
  high: XPSR_HIGH_LEVEL_INSTRUCTION,
  low: XPSR_LOW_LEVEL_INSTRUCTION,
});

/** Placeholder of the image in prompt templates. */
export const IMAGE_PLACEHOLDER = '<image>';
/** Placeholder of the instruction in prompt templates. */
export const INSTRUCTION_PLACEHOLDER = '{instruction}';

/**
 * LLaVA-1.5 (vicuna-style) prompt exactly as the official XPSR captioning script builds it:
 * `"<image>\nUSER: <instruction> \nASSISTANT:"`. LLaVA-1.5 GGUF files carry no chat template, so the
 * format is applied here. The part before and including the image is shared by all instructions.
 */
export const LLAVA15_PROMPT_TEMPLATE = `${IMAGE_PLACEHOLDER}\nUSER: ${INSTRUCTION_PLACEHOLDER} \nASSISTANT:`;

export interface SplitTemplate {
  /** Text up to and including the image (with the image replaced by `marker`). */
  prefix: string;
  /** Text after the image for a given instruction. */
  suffix(instruction: string): string;
}

/** Splits a template at the image; the image must come exactly once and before the instruction. */
export function splitPromptTemplate(template: string, marker: string): SplitTemplate {
  const i = template.indexOf(IMAGE_PLACEHOLDER);
  const j = template.indexOf(INSTRUCTION_PLACEHOLDER);
  if (i < 0 || template.indexOf(IMAGE_PLACEHOLDER, i + 1) >= 0) {
    throw new TypeError(`the prompt template must contain ${IMAGE_PLACEHOLDER} exactly once`);
  }
  if (j < 0 || template.indexOf(INSTRUCTION_PLACEHOLDER, j + 1) >= 0) {
    throw new TypeError(`the prompt template must contain ${INSTRUCTION_PLACEHOLDER} exactly once`);
  }
  if (j < i) throw new TypeError('the prompt template must place the image before the instruction');
  const prefix = template.slice(0, i) + marker;
  const rest = template.slice(i + IMAGE_PLACEHOLDER.length);
  return { prefix, suffix: (instruction) => rest.split(INSTRUCTION_PLACEHOLDER).join(instruction) };
}

/**
 * Post-processing of an MLLM answer as the official code does it: keep the text after the last
 * "ASSISTANT:" (if the model echoed the prompt), replace every "\n" with " ", and left-strip (what the
 * super-resolution step does when it reads the first line of a caption file).
 */
export function postprocessCaption(raw: string): string {
  let s = raw;
  const k = s.lastIndexOf('ASSISTANT:');
  if (k >= 0) s = s.slice(k + 'ASSISTANT:'.length);
  return s.split('\n').join(' ').replace(/^\s+/, '');
}

/** First line of a caption file, left-stripped ("" for an empty file), as the official test.py reads it. */
export function firstLineLeftStripped(text: string): string {
  const body = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
  const nl = body.indexOf('\n');
  const line = nl >= 0 ? body.slice(0, nl) : body;
  return line.replace(/\r$/, '').replace(/^\s+/, '');
}
