// HttpCaptioner: any OpenAI-compatible chat-completions endpoint with image input (llama-server started
// with --mmproj, vLLM, Ollama's /v1 API, ...). One request per instruction: the image as a data: URL, then
// the instruction, in one user message.
import { createHash } from 'node:crypto';

import { invalidOption, XpsrError } from '../errors.js';
import { cancelledError, throwIfAborted } from './errors.js';
import { imageFile, prepareImage } from './image.js';
import { postprocessCaption } from './instructions.js';
import type { CaptionImage, CaptionOptions, Captioner, GenerationOptions } from './types.js';

export interface HttpCaptionerOptions extends GenerationOptions {
  /**
   * Endpoint: a full `.../chat/completions` URL, or a base URL (`http://host:8080`, `http://host:8080/v1`) to
   * which `/v1/chat/completions` (or `/chat/completions` after `/v1`) is appended.
   */
  url: string;
  /** `model` field of the request (required by vLLM / Ollama; llama-server ignores it). */
  model?: string;
  /** Sent as `Authorization: Bearer <apiKey>`. */
  apiKey?: string;
  headers?: Record<string, string>;
  /** Per-request timeout in ms (default 120000). */
  timeoutMs?: number;
  /** Retries after a network error, a timeout, HTTP 408/429/5xx (default 2). */
  retries?: number;
  /** First retry delay in ms, doubled each retry (default 500); a Retry-After header wins (capped at 30 s). */
  retryDelayMs?: number;
  /** Optional system message. */
  systemPrompt?: string;
  /** Apply the XPSR post-processing (default true). */
  postprocess?: boolean;
  /** Extra JSON fields merged into every request body (e.g. { grammar: "..." } for llama-server). */
  extraBody?: Record<string, unknown>;
  /** Concurrent requests per caption() call (default 1: servers with one slot reuse the image prefix). */
  concurrency?: number;
  /** Defaults to the global fetch (for tests / custom agents). */
  fetch?: typeof fetch;
}

export function resolveChatCompletionsUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new XpsrError('ERR_INVALID_OPTION', `Invalid option 'url': not a URL: ${url}`, { option: 'url' });
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new XpsrError('ERR_INVALID_OPTION', `Invalid option 'url': the caption URL must be http(s): ${url}`, { option: 'url' });
  }
  const p = u.pathname.replace(/\/+$/, '');
  if (/\/chat\/completions$/.test(p)) u.pathname = p;
  else if (/\/v\d+$/.test(p)) u.pathname = `${p}/chat/completions`;
  else u.pathname = `${p}/v1/chat/completions`;
  return u.toString();
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(cancelledError(signal?.reason));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });

interface Attempt {
  retry: boolean;
  error: XpsrError;
  retryAfterMs?: number;
}

function snippet(text: string): string {
  const s = text.replace(/\s+/g, ' ').trim();
  return s.length > 300 ? `${s.slice(0, 300)}...` : s;
}

function serverMessage(body: string): string {
  try {
    const j = JSON.parse(body) as { error?: { message?: unknown } | string; message?: unknown; detail?: unknown };
    if (typeof j.error === 'string') return j.error;
    if (j.error && typeof j.error.message === 'string') return j.error.message;
    if (typeof j.message === 'string') return j.message;
    if (typeof j.detail === 'string') return j.detail;
  } catch {
    /* not JSON */
  }
  return snippet(body);
}

/** Extracts the answer text of a chat-completions response; throws ERR_CAPTION_SERVER. */
export function parseChatCompletion(body: string, endpoint: string): string {
  let j: unknown;
  try {
    j = JSON.parse(body);
  } catch {
    throw new XpsrError('ERR_CAPTION_SERVER', `${endpoint} did not return JSON: ${snippet(body) || '(empty body)'}`, { endpoint });
  }
  const choice = (j as { choices?: unknown })?.choices;
  const first = Array.isArray(choice) ? (choice[0] as { message?: { content?: unknown }; text?: unknown }) : undefined;
  const content = first?.message?.content ?? first?.text;
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    // content parts: [{ type: 'text', text }]
    const texts = content.map((p: { text?: unknown }) => (typeof p?.text === 'string' ? p.text : '')).join('');
    return texts;
  }
  if (first?.message && first.message.content === null) return '';
  throw new XpsrError('ERR_CAPTION_SERVER', `${endpoint} returned JSON without choices[0].message.content: ${snippet(body)}`, { endpoint });
}

export class HttpCaptioner implements Captioner {
  readonly kind = 'http';
  readonly id: string;
  readonly cacheable = true;
  readonly endpoint: string;
  readonly #o: HttpCaptionerOptions;
  readonly #fetch: typeof fetch;
  #disposed = false;

  constructor(options: HttpCaptionerOptions) {
    if (!options || typeof options.url !== 'string') throw invalidOption('url', 'the URL of an OpenAI-compatible server', options?.url);
    this.endpoint = resolveChatCompletionsUrl(options.url);
    this.#o = options;
    this.#fetch = options.fetch ?? globalThis.fetch;
    if (typeof this.#fetch !== 'function') throw new XpsrError('ERR_UNSUPPORTED', 'no fetch() in this Node.js');
    for (const [k, v] of [
      ['timeoutMs', options.timeoutMs],
      ['retries', options.retries],
      ['retryDelayMs', options.retryDelayMs],
      ['concurrency', options.concurrency],
    ] as const) {
      if (v !== undefined && (!Number.isFinite(v) || v < (k === 'concurrency' ? 1 : 0))) {
        throw invalidOption(k, `a number >= ${k === 'concurrency' ? 1 : 0}`, v);
      }
    }
    const identity = {
      endpoint: this.endpoint,
      model: options.model ?? '',
      system: options.systemPrompt ?? '',
      maxTokens: options.maxTokens ?? null,
      temperature: options.temperature ?? 0,
      topK: options.topK ?? null,
      topP: options.topP ?? null,
      seed: options.seed ?? null,
      extra: options.extraBody ?? null,
      post: options.postprocess ?? true,
    };
    this.id = `http:${createHash('sha256').update(JSON.stringify(identity)).digest('hex').slice(0, 32)}`;
  }

  async caption(image: CaptionImage, instructions: readonly string[], options: CaptionOptions = {}): Promise<string[]> {
    if (this.#disposed) throw new XpsrError('ERR_DISPOSED', 'the captioner was disposed');
    if (!Array.isArray(instructions) || instructions.some((s) => typeof s !== 'string')) {
      throw new XpsrError('ERR_INVALID_ARGUMENT', 'instructions must be an array of strings');
    }
    throwIfAborted(options.signal);
    const { bytes, mime } = await imageFile(await prepareImage(image, options.name));
    const dataUrl = `data:${mime};base64,${Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64')}`;
    const out: string[] = new Array(instructions.length);
    const queue = instructions.map((_, i) => i);
    const workers = Array.from({ length: Math.min(this.#o.concurrency ?? 1, queue.length) }, async () => {
      for (let i = queue.shift(); i !== undefined; i = queue.shift()) {
        const raw = await this.#request(dataUrl, instructions[i]!, options);
        out[i] = (this.#o.postprocess ?? true) ? postprocessCaption(raw) : raw;
      }
    });
    await Promise.all(workers);
    return out;
  }

  #body(dataUrl: string, instruction: string, options: CaptionOptions): string {
    const o = this.#o;
    const messages: unknown[] = [];
    if (o.systemPrompt) messages.push({ role: 'system', content: o.systemPrompt });
    messages.push({
      role: 'user',
      content: [
        { type: 'image_url', image_url: { url: dataUrl } },
        { type: 'text', text: instruction },
      ],
    });
    const body: Record<string, unknown> = { messages, stream: false, temperature: options.temperature ?? o.temperature ?? 0 };
    if (o.model) body.model = o.model;
    const maxTokens = options.maxTokens ?? o.maxTokens;
    if (maxTokens !== undefined) body.max_tokens = maxTokens;
    const topP = options.topP ?? o.topP;
    if (topP !== undefined) body.top_p = topP;
    const topK = options.topK ?? o.topK;
    if (topK !== undefined) body.top_k = topK;
    const seed = options.seed ?? o.seed;
    if (seed !== undefined) body.seed = seed;
    return JSON.stringify({ ...body, ...(o.extraBody ?? {}) });
  }

  async #request(dataUrl: string, instruction: string, options: CaptionOptions): Promise<string> {
    const o = this.#o;
    const retries = o.retries ?? 2;
    const body = this.#body(dataUrl, instruction, options);
    let delay = o.retryDelayMs ?? 500;
    for (let attempt = 0; ; attempt++) {
      throwIfAborted(options.signal);
      const r = await this.#attempt(body, options.signal);
      if (typeof r === 'string') return r;
      if (!r.retry || attempt >= retries) {
        if (attempt > 0) r.error.message += ` (after ${attempt + 1} attempts)`;
        throw r.error;
      }
      await sleep(Math.min(30_000, r.retryAfterMs ?? delay), options.signal);
      delay *= 2;
    }
  }

  async #attempt(body: string, signal?: AbortSignal): Promise<string | Attempt> {
    const o = this.#o;
    const timeoutMs = o.timeoutMs ?? 120_000;
    const ctl = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      ctl.abort();
    }, timeoutMs);
    const onAbort = () => ctl.abort();
    signal?.addEventListener('abort', onAbort, { once: true });
    const ep = this.endpoint;
    try {
      const headers: Record<string, string> = { 'content-type': 'application/json', accept: 'application/json', ...(o.headers ?? {}) };
      if (o.apiKey) headers.authorization = `Bearer ${o.apiKey}`;
      let res: Response;
      let text: string;
      try {
        res = await this.#fetch(ep, { method: 'POST', headers, body, signal: ctl.signal });
        text = await res.text();
      } catch (e) {
        if (signal?.aborted) throw cancelledError(signal.reason);
        if (timedOut) {
          return {
            retry: true,
            error: new XpsrError('ERR_CAPTION_TIMEOUT', `${ep} did not answer within ${timeoutMs} ms`, { endpoint: ep, timeoutMs }, { cause: e }),
          };
        }
        const cause = (e as { cause?: { code?: string; message?: string } }).cause;
        const why = cause?.code ?? cause?.message ?? (e as Error).message;
        return {
          retry: true,
          error: new XpsrError(
            'ERR_CAPTION_UNREACHABLE',
            `cannot reach ${ep} (${why}); is the server running?`,
            { endpoint: ep, reason: why },
            { cause: e },
          ),
        };
      }
      const status = res.status;
      if (status >= 200 && status < 300) return parseChatCompletion(text, ep);
      const msg = serverMessage(text);
      const retryAfter = Number(res.headers.get('retry-after'));
      const retryAfterMs = Number.isFinite(retryAfter) && retryAfter >= 0 ? retryAfter * 1000 : undefined;
      if (status === 401 || status === 403) {
        return {
          retry: false,
          error: new XpsrError('ERR_CAPTION_AUTH', `${ep} refused the credentials (HTTP ${status}): ${msg}`, { endpoint: ep, status }),
        };
      }
      if (status === 404) {
        return {
          retry: false,
          error: new XpsrError(
            'ERR_CAPTION_SERVER',
            `${ep} returned HTTP 404: ${msg} (expected an OpenAI-compatible /v1/chat/completions endpoint)`,
            { endpoint: ep, status },
          ),
        };
      }
      if (status === 408 || status === 429 || status >= 500) {
        return {
          retry: true,
          retryAfterMs,
          error: new XpsrError('ERR_CAPTION_SERVER', `${ep} answered HTTP ${status}: ${msg}`, { endpoint: ep, status }),
        };
      }
      if (status === 400 || status === 413 || status === 415 || status === 422) {
        return {
          retry: false,
          error: new XpsrError(
            'ERR_CAPTION_SERVER',
            `${ep} rejected the request (HTTP ${status}): ${msg} (does the served model accept images? llama-server needs --mmproj)`,
            { endpoint: ep, status },
          ),
        };
      }
      return { retry: false, error: new XpsrError('ERR_CAPTION_SERVER', `${ep} answered HTTP ${status}: ${msg}`, { endpoint: ep, status }) };
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    }
  }

  async dispose(): Promise<void> {
    this.#disposed = true;
  }
}
