/**
 * From an HTTP request to a JobRequest: the image (raw body or one multipart file), the options (query
 * string and/or multipart fields, with the library's option names) and the output format. Values are
 * converted from text only as far as their type goes; the rules (ranges, allowed names) are the
 * library's own (resolveUpscaleOptions), so the server accepts exactly what the API accepts.
 *
 * Limits are checked before any pixel is decoded: the body size by fastify/multipart while reading, the
 * declared image size from the header (sharp metadata) against the input and output pixel limits.
 */
import sharp from 'sharp';
import type { FastifyRequest } from 'fastify';
import { XpsrError, invalidOption } from '../errors.js';
import { resolveUpscaleOptions } from '../options.js';
import { preprocessGeometry } from '../image/preprocess.js';
import { OUTPUT_FORMATS, type JobOptions, type JobRequest, type OutputFormat } from './jobs.js';
import { ERR_BAD_REQUEST, ERR_IMAGE_MISSING } from './errors.js';

/** Request fields with the library's option names (dots for nested ones) and how their text converts. */
export const OPTION_FIELDS = {
  scale: 'number',
  processSize: 'number',
  steps: 'number',
  guidanceScale: 'number',
  conditioningScale: 'number',
  seed: 'number',
  scheduler: 'string',
  'prompts.high': 'string',
  'prompts.low': 'string',
  addedPrompt: 'string',
  negativePrompt: 'string',
  lowLevelGuidance: 'string',
  longPrompts: 'string',
  init: 'string',
  addedNoiseLevel: 'number',
  colorFix: 'string',
  tiling: 'string',
  'tiling.tileSize': 'number',
  'tiling.overlap': 'number',
  'tiling.maxLatentPixels': 'number',
  'tiling.memoryBudgetMB': 'number',
  vaeTiling: 'string',
} as const;
export type OptionField = keyof typeof OPTION_FIELDS;

/** Fields of the server itself (not upscale options). */
export const SERVER_FIELDS = ['format'] as const;

export interface InputLimits {
  maxInputPixels: number;
  maxOutputPixels: number;
}

const NUMBER_TEXT = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;

/**
 * Options from text fields. A number field whose text is not a number is passed on as text, so the
 * library's message names the option and the value ("expected an integer ..., got "abc" (string)").
 */
export function optionsFromFields(fields: Map<string, string>): { options: JobOptions; format: string | undefined } {
  const o: Record<string, unknown> = {};
  const prompts: Record<string, string> = {};
  const tiling: Record<string, unknown> = {};
  let format: string | undefined;
  for (const [name, text] of fields) {
    if (name === 'format') {
      format = text;
      continue;
    }
    if (name === 'maxInputPixels')
      throw new XpsrError('ERR_INVALID_OPTION', "Invalid option 'maxInputPixels': the input pixel limit is set by the server (--max-input-pixels)", {
        option: name,
      });
    if (!(name in OPTION_FIELDS))
      throw new XpsrError('ERR_INVALID_OPTION', `Unknown option '${name}' (known: ${[...Object.keys(OPTION_FIELDS), ...SERVER_FIELDS].join(', ')})`, {
        option: name,
      });
    const kind = OPTION_FIELDS[name as OptionField];
    const value = kind === 'number' && NUMBER_TEXT.test(text.trim()) ? Number(text) : text;
    if (name.startsWith('prompts.')) prompts[name.slice(8)] = value as string;
    else if (name.startsWith('tiling.')) tiling[name.slice(7)] = value;
    else o[name] = value;
  }
  if (Object.keys(prompts).length) o.prompts = prompts;
  if (Object.keys(tiling).length) o.tiling = { mode: o.tiling ?? 'auto', ...tiling };
  resolveUpscaleOptions(o); // the library's validation: throws ERR_INVALID_OPTION naming the option
  return { options: o as JobOptions, format };
}

/** The output format: the `format` field, else the first supported image type in Accept, else png. */
export function chooseFormat(field: string | undefined, accept: string | undefined): OutputFormat {
  if (field !== undefined) {
    const f = field === 'jpg' ? 'jpeg' : field === 'tif' ? 'tiff' : field;
    if (!OUTPUT_FORMATS.includes(f as OutputFormat)) throw invalidOption('format', `one of ${OUTPUT_FORMATS.map((x) => `'${x}'`).join(', ')}`, field);
    return f as OutputFormat;
  }
  for (const part of (accept ?? '').split(',')) {
    const type = part.split(';')[0].trim().toLowerCase();
    const f = type.startsWith('image/') ? type.slice(6) : '';
    if (OUTPUT_FORMATS.includes(f as OutputFormat)) return f as OutputFormat;
  }
  return 'png';
}

/**
 * Reads the declared size from the image header only and refuses images above the limits, including
 * outputs (scale x input, or the processed size) above the output limit. Garbage -> ERR_IMAGE_UNREADABLE.
 */
export async function checkImageHeader(image: Buffer, options: JobOptions, limits: InputLimits): Promise<{ width: number; height: number }> {
  if (image.length === 0) throw new XpsrError(ERR_IMAGE_MISSING, 'the request has no image (send it as the body or as a multipart file)');
  let meta: sharp.Metadata;
  try {
    meta = await sharp(image, { limitInputPixels: false }).metadata();
  } catch (e) {
    throw new XpsrError('ERR_IMAGE_UNREADABLE', `the body is not an image sharp can read (${(e as Error).message})`);
  }
  const width = meta.width ?? 0;
  const height = meta.height ?? 0;
  if (!width || !height) throw new XpsrError('ERR_IMAGE_UNREADABLE', 'the image header declares no size');
  const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
  if (width * height > limits.maxInputPixels)
    throw new XpsrError(
      'ERR_IMAGE_TOO_LARGE',
      `the image is ${width}x${height} = ${fmt(width * height)} pixels; this server accepts at most ` + `${fmt(limits.maxInputPixels)} input pixels`,
      { width, height, limit: limits.maxInputPixels },
    );
  const r = resolveUpscaleOptions(options);
  const g = preprocessGeometry(width, height, { scale: r.scale, processSize: r.processSize });
  const out = Math.max(g.outWidth * g.outHeight, g.width * g.height);
  if (out > limits.maxOutputPixels)
    throw new XpsrError(
      'ERR_IMAGE_TOO_LARGE',
      `the output would be ${fmt(out)} pixels (scale ${r.scale}, processSize ${r.processSize}); ` +
        `this server produces at most ${fmt(limits.maxOutputPixels)}`,
      { width, height, limit: limits.maxOutputPixels },
    );
  return { width, height };
}

/** Adds one text field, refusing repeats (an option given twice is a client bug, not a choice). */
function addField(fields: Map<string, string>, name: string, value: unknown): void {
  if (Array.isArray(value)) throw new XpsrError(ERR_BAD_REQUEST, `option '${name}' is given more than once`, { option: name });
  if (fields.has(name)) throw new XpsrError(ERR_BAD_REQUEST, `option '${name}' is given more than once`, { option: name });
  fields.set(name, String(value));
}

/** Parses the request into a validated JobRequest (throws coded errors for every bad input). */
export async function readJobRequest(req: FastifyRequest, limits: InputLimits): Promise<JobRequest> {
  const fields = new Map<string, string>();
  for (const [k, v] of Object.entries((req.query ?? {}) as Record<string, unknown>)) addField(fields, k, v);
  let image: Buffer | undefined;
  if (req.isMultipart()) {
    for await (const part of req.parts()) {
      if (part.type === 'file') {
        if (image) throw new XpsrError(ERR_BAD_REQUEST, 'only one image per request');
        image = await part.toBuffer();
      } else {
        addField(fields, part.fieldname, part.value);
      }
    }
  } else if (Buffer.isBuffer(req.body)) {
    image = req.body;
  }
  const { options, format } = optionsFromFields(fields);
  const chosen = chooseFormat(format, req.headers.accept);
  if (!image)
    throw new XpsrError(ERR_IMAGE_MISSING, 'the request has no image (send it as the body with an image/* content type, or as a multipart file)');
  await checkImageHeader(image, options, limits);
  return { image, options, format: chosen };
}
