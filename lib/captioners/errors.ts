// Errors of the captioning subsystem. Every failure is a CaptionError with a stable `.code`.

export type CaptionErrorCode =
  | 'ERR_INVALID_ARGUMENT'
  | 'ERR_CANCELLED'
  | 'ERR_CAPTIONER_NOT_BUILT'    // the native captioner addon is missing / disabled / for another node-llama-cpp
  | 'ERR_CAPTIONER_UNSUPPORTED'  // node-llama-cpp runs a binary the addon was not linked against
  | 'ERR_MODEL_MISSING'          // the language model GGUF file does not exist
  | 'ERR_MMPROJ_MISSING'         // the mmproj GGUF file does not exist
  | 'ERR_MODEL_INVALID'          // not a GGUF file (bad magic, truncated header)
  | 'ERR_MODEL_LOAD'             // llama.cpp refused the language model
  | 'ERR_MMPROJ_LOAD'            // llama.cpp refused the projector
  | 'ERR_MODEL_SHARE'            // a LlamaModel could not be shared
  | 'ERR_CONTEXT'                // context creation failed
  | 'ERR_CONTEXT_FULL'           // prompt + answer do not fit in contextSize
  | 'ERR_IMAGE_DECODE'           // the image cannot be read
  | 'ERR_IMAGE_MISSING'          // the image file does not exist
  | 'ERR_ENCODE'                 // the vision encoder failed
  | 'ERR_DECODE'                 // llama_decode failed
  | 'ERR_TOKENIZE'
  | 'ERR_DISPOSED'
  | 'ERR_BUSY'
  | 'ERR_OUT_OF_MEMORY'
  | 'ERR_UNSUPPORTED'
  | 'ERR_CAPTION_MISSING'        // a sidecar caption file does not exist
  | 'ERR_CAPTION_HTTP_UNREACHABLE'
  | 'ERR_CAPTION_HTTP_TIMEOUT'
  | 'ERR_CAPTION_HTTP_AUTH'
  | 'ERR_CAPTION_HTTP_NOT_FOUND'
  | 'ERR_CAPTION_HTTP_BAD_REQUEST'
  | 'ERR_CAPTION_HTTP_STATUS'
  | 'ERR_CAPTION_HTTP_BAD_RESPONSE'
  | 'ERR_INTERNAL';

export class CaptionError extends Error {
  readonly code: CaptionErrorCode;
  /** HTTP status for ERR_CAPTION_HTTP_* errors that came with a response. */
  readonly status?: number;

  constructor(code: CaptionErrorCode, message: string, options?: { cause?: unknown; status?: number }) {
    super(message, options?.cause !== undefined ? { cause: options.cause } : undefined);
    this.name = 'CaptionError';
    this.code = code;
    if (options?.status !== undefined) this.status = options.status;
  }
}

/** A JS error thrown by the native addon (with a string `.code`) becomes a CaptionError. */
export function fromNativeError(e: unknown): CaptionError {
  if (e instanceof CaptionError) return e;
  const err = e as { code?: unknown; message?: unknown };
  const code = typeof err?.code === 'string' ? err.code : 'ERR_INTERNAL';
  const message = typeof err?.message === 'string' ? err.message : String(e);
  return new CaptionError(code as CaptionErrorCode, message, { cause: e });
}

export function cancelledError(reason?: unknown): CaptionError {
  const why = reason instanceof Error ? `: ${reason.message}` : typeof reason === 'string' ? `: ${reason}` : '';
  return new CaptionError('ERR_CANCELLED', `captioning was cancelled${why}`, { cause: reason });
}

export function throwIfAborted(signal?: AbortSignal): void {
  if (signal?.aborted) throw cancelledError(signal.reason);
}
