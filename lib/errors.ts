/**
 * The one error type of the TypeScript side. Every failure a user can act on is an XpsrError with a
 * stable `code` (one of ERROR_CODES below) and optional structured `details`. Native (N-API) errors carry
 * the same codes (native/common/error.h) and are wrapped into XpsrErrors (lib/native.ts).
 *
 * Messages name options in single quotes ('processSize'); the CLI swaps those names for its flags
 * (--process-size) so that every caller reads the advice in its own terms (lib/cli/common.ts).
 */

/** Every code the library throws, with when it happens (the README's table is generated from the same text). */
export const ERROR_CODES = {
  ERR_INVALID_OPTION: 'an option (API) or flag (CLI) has the wrong type or is out of range; the message names it',
  ERR_INVALID_ARGUMENT: 'a lower-level call got a malformed argument (tensor shape, input type, tile size)',
  ERR_IMAGE_EMPTY: 'the input has zero bytes or zero pixels',
  ERR_IMAGE_UNREADABLE: 'the input is missing, not an image, truncated or corrupt',
  ERR_IMAGE_TOO_LARGE: "the input exceeds 'maxInputPixels', its aspect ratio exceeds 'maxAspectRatio', or its processed size would not fit in memory",
  ERR_WEIGHTS_MISSING: 'a weights folder, file or tensor is missing',
  ERR_WEIGHTS_INVALID: 'a weights or config file is corrupt, truncated, hostile, has NaN/Inf or out-of-range values',
  ERR_SHAPE_MISMATCH: 'a tensor has the wrong shape (weights that do not match their config, wrong input sizes)',
  ERR_UNSUPPORTED: 'a format, config value or feature this build does not implement (e.g. an unknown output extension)',
  ERR_IO: 'a file could not be written or read (output folder missing, permission denied, disk full)',
  ERR_DEVICE_UNAVAILABLE: "the requested device cannot be used (no CUDA build, driver or GPU for 'cuda')",
  ERR_OUT_OF_MEMORY: 'host or device memory is insufficient for this size; the instance keeps serving',
  ERR_CANCELLED: 'the AbortSignal fired (API) or the command was interrupted (CLI, exit status 130)',
  ERR_DISPOSED: 'the XPSR instance or engine was disposed',
  ERR_NATIVE_MISSING: 'the native engine addon could not be loaded (not built, or built for another Node)',
  ERR_CAPTION_MISSING: 'a sidecar or fixed caption is missing for an image (docs/captioning.md)',
  ERR_CAPTION_UNREACHABLE: 'the caption server cannot be reached',
  ERR_CAPTION_TIMEOUT: 'the caption server did not answer in time (after retries)',
  ERR_CAPTION_AUTH: 'the caption server refused the credentials',
  ERR_CAPTION_SERVER: 'the caption server answered with an error or with something that is not a chat completion',
  // The HTTP server and the job queue (docs/serving.md; each maps to an HTTP status in lib/server/errors.ts).
  ERR_BAD_REQUEST: 'server: the request is malformed (garbage body, truncated multipart, duplicated or unknown field)',
  ERR_IMAGE_MISSING: 'server: the request carries no image',
  ERR_UNAUTHORIZED: 'server: the API key is missing or wrong',
  ERR_NOT_FOUND: 'server: no such route',
  ERR_JOB_NOT_FOUND: 'server: no such job (never existed, or its result expired)',
  ERR_JOB_NOT_FINISHED: 'server: the job has no result yet',
  ERR_JOB_FINISHED: 'server: the job already finished and cannot be cancelled',
  ERR_BODY_TOO_LARGE: 'server: the request body exceeds the size limit',
  ERR_UNSUPPORTED_MEDIA_TYPE: 'server: the content type is neither an image nor multipart form data',
  ERR_QUEUE_FULL: 'server: the job queue is full (retry after the Retry-After delay)',
  ERR_NOT_READY: 'server: the weights are still loading or no device is usable',
  ERR_DRAINING: 'server: the server is shutting down and accepts no new work',
  ERR_TIMEOUT: 'server: the job exceeded the per-job time limit and was cancelled',
  ERR_SHUTDOWN: 'server: the job was cancelled because the drain timeout expired at shutdown',
  ERR_CLIENT_GONE: 'server: the client of a synchronous request disconnected, so its job was cancelled',
  // The Redis queue (docs/deployment.md).
  ERR_BLOB_TOO_LARGE: 'queue: an input or result exceeds the Redis blob store size limit (use --blob-dir for larger images)',
  ERR_BLOB_STORE_MISMATCH: 'queue: the worker cannot read the blob store the job was written to (Redis keys vs a shared directory)',
  ERR_REDIS_UNAVAILABLE: 'queue: Redis cannot be reached or refused the write (down, full)',
  ERR_INPUT_EXPIRED: "queue: the job's input expired from the blob store before a worker took it",
  ERR_WORKER_LOST: 'queue: the workers running the job died more often than the stalled-job limit allows',
  ERR_INTERNAL: 'a bug in xpsr-native (please report it with the message)',
} as const;

export type XpsrErrorCode = keyof typeof ERROR_CODES;

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
export const ERR_DISPOSED = 'ERR_DISPOSED';
export const ERR_NATIVE_MISSING = 'ERR_NATIVE_MISSING';

export function isXpsrErrorCode(code: unknown): code is XpsrErrorCode {
  return typeof code === 'string' && Object.hasOwn(ERROR_CODES, code);
}

export class XpsrError extends Error {
  readonly code: XpsrErrorCode;
  readonly details?: object;

  /** An unknown `code` (e.g. from a foreign native error) becomes ERR_INTERNAL. */
  constructor(code: XpsrErrorCode, message: string, details?: object, options?: { cause?: unknown }) {
    super(message, options?.cause !== undefined ? { cause: options.cause } : undefined);
    this.name = 'XpsrError';
    this.code = isXpsrErrorCode(code) ? code : 'ERR_INTERNAL';
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
  return new XpsrError(ERR_INVALID_OPTION, `Invalid option '${name}': expected ${expected}, got ${describeValue(actual)}`, {
    option: name,
    expected,
  });
}
