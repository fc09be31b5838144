/**
 * The one error type of the TypeScript side. Every failure a user can act on is an XpsrError with a
 * stable `code` (string constant below) and optional structured `details`.
 * Native (N-API) errors carry the same codes (native/common/error.h).
 */

export const ERR_IMAGE_UNREADABLE = 'ERR_IMAGE_UNREADABLE';
export const ERR_IMAGE_TOO_LARGE = 'ERR_IMAGE_TOO_LARGE';
export const ERR_IMAGE_EMPTY = 'ERR_IMAGE_EMPTY';
export const ERR_INVALID_OPTION = 'ERR_INVALID_OPTION';
export const ERR_INVALID_ARGUMENT = 'ERR_INVALID_ARGUMENT';
export const ERR_CANCELLED = 'ERR_CANCELLED';
export const ERR_WEIGHTS_MISSING = 'ERR_WEIGHTS_MISSING';
export const ERR_WEIGHTS_INVALID = 'ERR_WEIGHTS_INVALID';
export const ERR_SHAPE_MISMATCH = 'ERR_SHAPE_MISMATCH';
export const ERR_IO = 'ERR_IO';
export const ERR_DEVICE_UNAVAILABLE = 'ERR_DEVICE_UNAVAILABLE';
export const ERR_OUT_OF_MEMORY = 'ERR_OUT_OF_MEMORY';
export const ERR_INTERNAL = 'ERR_INTERNAL';
export const ERR_UNSUPPORTED = 'ERR_UNSUPPORTED';
// Captioning (docs/captioning.md): a sidecar caption file is missing; the caption server cannot be reached,
// does not answer in time, refuses the credentials, or answers with an error / not a chat completion.
export const ERR_CAPTION_MISSING = 'ERR_CAPTION_MISSING';
export const ERR_CAPTION_UNREACHABLE = 'ERR_CAPTION_UNREACHABLE';
export const ERR_CAPTION_TIMEOUT = 'ERR_CAPTION_TIMEOUT';
export const ERR_CAPTION_AUTH = 'ERR_CAPTION_AUTH';
export const ERR_CAPTION_SERVER = 'ERR_CAPTION_SERVER';

export type XpsrErrorCode =
  | typeof ERR_IMAGE_UNREADABLE
  | typeof ERR_IMAGE_TOO_LARGE
  | typeof ERR_IMAGE_EMPTY
  | typeof ERR_INVALID_OPTION
  | typeof ERR_INVALID_ARGUMENT
  | typeof ERR_CANCELLED
  | typeof ERR_WEIGHTS_MISSING
  | typeof ERR_WEIGHTS_INVALID
  | typeof ERR_SHAPE_MISMATCH
  | typeof ERR_IO
  | typeof ERR_DEVICE_UNAVAILABLE
  | typeof ERR_OUT_OF_MEMORY
  | typeof ERR_INTERNAL
  | typeof ERR_UNSUPPORTED
  | typeof ERR_CAPTION_MISSING
  | typeof ERR_CAPTION_UNREACHABLE
  | typeof ERR_CAPTION_TIMEOUT
  | typeof ERR_CAPTION_AUTH
  | typeof ERR_CAPTION_SERVER;

export class XpsrError extends Error {
  readonly code: string;
  readonly details?: object;

  constructor(code: string, message: string, details?: object, options?: { cause?: unknown }) {
    super(message, options?.cause !== undefined ? { cause: options.cause } : undefined);
    this.name = 'XpsrError';
    this.code = code;
    if (details !== undefined) this.details = details;
  }
}

/** Short, human-readable rendering of a value for messages: `0 (number)`, `'abc' (string)`, `null`. */
export function describeValue(v: unknown): string {
  if (v === null) return 'null';
  if (v === undefined) return 'undefined';
  if (typeof v === 'string') return `${JSON.stringify(v.length > 60 ? v.slice(0, 57) + '...' : v)} (string)`;
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return `${String(v)} (${typeof v})`;
  if (Array.isArray(v)) return `an array of length ${v.length}`;
  if (typeof v === 'function') return 'a function';
  const ctor = (v as object).constructor?.name;
  return ctor && ctor !== 'Object' ? `a ${ctor}` : 'an object';
}

/**
 * `invalidOption('steps', 'an integer between 1 and 1000', 0)` →
 * XpsrError(ERR_INVALID_OPTION, "Invalid option 'steps': expected an integer between 1 and 1000, got 0 (number)").
 */
export function invalidOption(name: string, expected: string, actual: unknown): XpsrError {
  return new XpsrError(
    ERR_INVALID_OPTION,
    `Invalid option '${name}': expected ${expected}, got ${describeValue(actual)}`,
    { option: name, expected },
  );
}

export function isXpsrError(e: unknown, code?: string): e is XpsrError {
  return e instanceof XpsrError && (code === undefined || e.code === code);
}
