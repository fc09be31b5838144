/**
 * Errors of the HTTP server: the server's own codes, and the one mapping from any error (library,
 * captioner, fastify, multipart) to an HTTP status and the JSON body `{ code, message }`. Nothing else
 * ever reaches a client: no stack traces, no internal messages of unexpected exceptions.
 */
import { XpsrError, type XpsrErrorCode } from '../errors.js';

export const ERR_BAD_REQUEST = 'ERR_BAD_REQUEST';
export const ERR_IMAGE_MISSING = 'ERR_IMAGE_MISSING';
export const ERR_UNAUTHORIZED = 'ERR_UNAUTHORIZED';
export const ERR_NOT_FOUND = 'ERR_NOT_FOUND';
export const ERR_JOB_NOT_FOUND = 'ERR_JOB_NOT_FOUND';
export const ERR_JOB_NOT_FINISHED = 'ERR_JOB_NOT_FINISHED';
export const ERR_JOB_FINISHED = 'ERR_JOB_FINISHED';
export const ERR_BODY_TOO_LARGE = 'ERR_BODY_TOO_LARGE';
export const ERR_UNSUPPORTED_MEDIA_TYPE = 'ERR_UNSUPPORTED_MEDIA_TYPE';
export const ERR_QUEUE_FULL = 'ERR_QUEUE_FULL';
export const ERR_NOT_READY = 'ERR_NOT_READY';
export const ERR_DRAINING = 'ERR_DRAINING';
export const ERR_TIMEOUT = 'ERR_TIMEOUT';
export const ERR_SHUTDOWN = 'ERR_SHUTDOWN';
export const ERR_CLIENT_GONE = 'ERR_CLIENT_GONE';

/** Status of each code a client can meet. Codes not listed (weights, engine internals...) answer 500. */
const STATUS: Record<string, number> = {
  ERR_BAD_REQUEST: 400,
  ERR_IMAGE_MISSING: 400,
  ERR_INVALID_OPTION: 400,
  ERR_INVALID_ARGUMENT: 400,
  ERR_UNAUTHORIZED: 401,
  ERR_NOT_FOUND: 404,
  ERR_JOB_NOT_FOUND: 404,
  ERR_JOB_NOT_FINISHED: 409,
  ERR_JOB_FINISHED: 409,
  ERR_CANCELLED: 409,
  ERR_CLIENT_GONE: 409,
  ERR_BODY_TOO_LARGE: 413,
  ERR_IMAGE_TOO_LARGE: 413,
  ERR_OUT_OF_MEMORY: 413,
  ERR_UNSUPPORTED_MEDIA_TYPE: 415,
  ERR_IMAGE_UNREADABLE: 422,
  ERR_IMAGE_EMPTY: 422,
  ERR_UNSUPPORTED: 422,
  ERR_QUEUE_FULL: 429,
  ERR_NOT_READY: 503,
  ERR_DRAINING: 503,
  ERR_DEVICE_UNAVAILABLE: 503,
  ERR_TIMEOUT: 503,
  ERR_SHUTDOWN: 503,
  ERR_CAPTION_UNREACHABLE: 503,
  ERR_CAPTION_TIMEOUT: 503,
  ERR_CAPTION_SERVER: 502,
  ERR_CAPTION_AUTH: 502,
  ERR_CAPTION_MISSING: 422,
  // The Redis queue (lib/queue): blob over the Redis limit; Redis down; a job whose input expired before a
  // worker took it, or whose worker died too often.
  ERR_BLOB_TOO_LARGE: 413,
  ERR_REDIS_UNAVAILABLE: 503,
  ERR_INPUT_EXPIRED: 503,
  ERR_WORKER_LOST: 503,
};

export function statusOf(code: string): number {
  return STATUS[code] ?? 500;
}

/** Fastify and @fastify/multipart errors that are the client's fault, as our codes. */
const FRAMEWORK: Record<string, [string, string?]> = {
  FST_ERR_CTP_BODY_TOO_LARGE: [ERR_BODY_TOO_LARGE],
  FST_REQ_FILE_TOO_LARGE: [ERR_BODY_TOO_LARGE, 'the uploaded file is larger than the body limit'],
  FST_PARTS_LIMIT: [ERR_BODY_TOO_LARGE, 'too many multipart parts'],
  FST_FILES_LIMIT: [ERR_BAD_REQUEST, 'only one file per request'],
  FST_FIELDS_LIMIT: [ERR_BAD_REQUEST, 'too many multipart fields'],
  FST_PROTO_VIOLATION: [ERR_BAD_REQUEST, 'malformed multipart field name'],
  FST_INVALID_MULTIPART_CONTENT_TYPE: [ERR_UNSUPPORTED_MEDIA_TYPE],
  FST_ERR_CTP_INVALID_MEDIA_TYPE: [ERR_UNSUPPORTED_MEDIA_TYPE],
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: [ERR_BAD_REQUEST],
  FST_ERR_CTP_EMPTY_TYPE: [ERR_UNSUPPORTED_MEDIA_TYPE],
  FST_ERR_CTP_INVALID_TYPE: [ERR_UNSUPPORTED_MEDIA_TYPE],
  FST_ERR_CTP_EMPTY_JSON_BODY: [ERR_BAD_REQUEST],
  FST_ERR_BAD_URL: [ERR_BAD_REQUEST],
  FST_MP_PREMATURE_CLOSE: [ERR_BAD_REQUEST, 'the request ended before the multipart body was complete'],
  FST_INVALID_JSON_FIELD_ERROR: [ERR_BAD_REQUEST],
};

export interface HttpError {
  status: number;
  code: string;
  message: string;
}

/**
 * Any thrown value as the answer a client gets. Coded library / captioner errors keep their code and
 * message (they are written for users); unexpected exceptions become ERR_INTERNAL with a fixed message
 * (the details go to the server log only).
 */
export function toHttpError(e: unknown): HttpError {
  const err = e as { code?: unknown; message?: unknown; statusCode?: unknown; name?: unknown };
  const code = typeof err?.code === 'string' ? err.code : undefined;
  const message = typeof err?.message === 'string' ? err.message : String(e);
  if (code && code in FRAMEWORK) {
    const [ours, text] = FRAMEWORK[code];
    return { status: statusOf(ours), code: ours, message: text ?? message.replace(/^FST_\w+:\s*/, '') };
  }
  if (code && code.startsWith('ERR_')) return { status: statusOf(code), code, message };
  // Malformed multipart bodies (busboy: "Unexpected end of form", "Malformed part header"...) and
  // socket-level parse failures arrive without one of our codes but with a 4xx statusCode.
  const sc = typeof err?.statusCode === 'number' ? err.statusCode : 0;
  if (sc >= 400 && sc < 500) return { status: 400, code: ERR_BAD_REQUEST, message: `bad request: ${message}` };
  if (/Unexpected end of (form|multipart)|Malformed|Multipart: Boundary not found/i.test(message))
    return { status: 400, code: ERR_BAD_REQUEST, message: `malformed multipart body: ${message}` };
  return { status: 500, code: 'ERR_INTERNAL', message: 'internal error (details are in the server log)' };
}

/** An XpsrError with one of the server's codes. */
export function serverError(code: XpsrErrorCode, message: string, details?: object): XpsrError {
  return new XpsrError(code, message, details);
}
