// Captioners fail with the library's one error type, XpsrError. This file maps the captioner addon's
// internal codes onto the library's codes and holds the cancellation helpers.
import { XpsrError } from '../errors.js';

/**
 * Library code for each code the captioner addon (native/captioner/src/addon.cpp) rejects with.
 * Codes the JS side cannot provoke (a second call while one runs, caption before load) are internal.
 */
const NATIVE_CODES: Record<string, string> = {
  ERR_INVALID_ARGUMENT: 'ERR_INVALID_ARGUMENT',
  ERR_CANCELLED: 'ERR_CANCELLED',
  ERR_DISPOSED: 'ERR_DISPOSED',
  ERR_OUT_OF_MEMORY: 'ERR_OUT_OF_MEMORY',
  ERR_UNSUPPORTED: 'ERR_UNSUPPORTED',
  ERR_MODEL_LOAD: 'ERR_WEIGHTS_INVALID', // llama.cpp refused the language model GGUF
  ERR_MMPROJ_LOAD: 'ERR_WEIGHTS_INVALID', // ... or the projector (or it does not fit the model)
  ERR_MODEL_SHARE: 'ERR_UNSUPPORTED', // a LlamaModel of a node-llama-cpp build this addon was not made for
  ERR_CONTEXT: 'ERR_OUT_OF_MEMORY', // llama.cpp could not allocate the context
  ERR_CONTEXT_FULL: 'ERR_INVALID_OPTION', // contextSize too small for the prompt (details.option)
  ERR_ENCODE: 'ERR_INTERNAL',
  ERR_DECODE: 'ERR_INTERNAL',
  ERR_TOKENIZE: 'ERR_INTERNAL',
  ERR_BUSY: 'ERR_INTERNAL',
  ERR_NOT_LOADED: 'ERR_INTERNAL',
};

/** A rejection of the captioner addon (an Error with a string `.code`) as an XpsrError. */
export function fromNativeError(e: unknown): XpsrError {
  if (e instanceof XpsrError) return e;
  const err = e as { code?: unknown; message?: unknown };
  const nativeCode = typeof err?.code === 'string' ? err.code : 'ERR_INTERNAL';
  const message = typeof err?.message === 'string' ? err.message : String(e);
  const code = NATIVE_CODES[nativeCode] ?? 'ERR_INTERNAL';
  const details = nativeCode === 'ERR_CONTEXT_FULL' ? { option: 'contextSize' } : undefined;
  return new XpsrError(code, message, details, { cause: e });
}

export function cancelledError(reason?: unknown): XpsrError {
  const why = reason instanceof Error ? `: ${reason.message}` : typeof reason === 'string' ? `: ${reason}` : '';
  return new XpsrError('ERR_CANCELLED', `captioning was cancelled${why}`, undefined, { cause: reason });
}

export function throwIfAborted(signal?: AbortSignal): void {
  if (signal?.aborted) throw cancelledError(signal.reason);
}
