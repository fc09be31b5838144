/**
 * The OpenAPI 3.1 document served at GET /openapi.json. Written out by hand (it is the contract); a test
 * checks that every route the server registers is described here and every described route exists.
 */
import { OPTION_FIELDS, type OptionField } from './input.js';

const OPTION_TEXT: Record<OptionField, string> = {
  scale: 'Output size / input size (integer 1..16, default 4).',
  processSize: 'Minimum short side the networks see (default 512).',
  steps: 'Denoising steps (1..1000, default 20).',
  guidanceScale: 'Classifier-free guidance (default 4.5; <= 1 runs without CFG).',
  conditioningScale: 'ControlNet residual scale (default 1).',
  seed: 'Noise seed (integer; default random, reported in the result).',
  scheduler: "'ddpm' (default), 'dpmpp' or 'unipc'.",
  'prompts.high': 'High-level caption (content). Without captions the configured captioner writes them, else "".',
  'prompts.low': 'Low-level caption (quality).',
  addedPrompt: 'Appended to the high-level caption (default: the official one).',
  negativePrompt: 'Negative high-level prompt (default: the official one).',
  lowLevelGuidance: "'official' (default) or 'paper'.",
  longPrompts: "'truncate' (default, 77 tokens) or 'chunks'.",
  init: "'lr' (default) or 'noise'.",
  addedNoiseLevel: 'Second noising timestep (default 800).',
  colorFix: "'adain' (default), 'wavelet' or 'none'.",
  tiling: "Latent tiling 'auto' (default), 'on' or 'off'.",
  'tiling.tileSize': 'Latent tile size (default 320).',
  'tiling.overlap': 'Latent tile overlap (default 8).',
  'tiling.maxLatentPixels': "Latent pixels above which 'auto' tiles (default 102400).",
  'tiling.memoryBudgetMB': 'Tile whenever a whole-latent step needs more activation memory than this.',
  vaeTiling: "Tiled VAE 'auto' (default), 'on' or 'off'.",
};

const error = { $ref: '#/components/schemas/Error' };
const errorResponse = (description: string) => ({ description, content: { 'application/json': { schema: error } } });
const imageContent = {
  'image/png': { schema: { type: 'string', format: 'binary' } },
  'image/jpeg': { schema: { type: 'string', format: 'binary' } },
  'image/webp': { schema: { type: 'string', format: 'binary' } },
  'image/tiff': { schema: { type: 'string', format: 'binary' } },
};

function optionParameters() {
  return [
    ...Object.entries(OPTION_FIELDS).map(([name, kind]) => ({
      name,
      in: 'query',
      required: false,
      description: OPTION_TEXT[name as OptionField],
      schema: { type: kind },
    })),
    {
      name: 'format',
      in: 'query',
      required: false,
      description: 'Output format: png (default), jpeg, webp, tiff (else from Accept).',
      schema: { type: 'string', enum: ['png', 'jpeg', 'webp', 'tiff'] },
    },
  ];
}

const imageRequestBody = {
  required: true,
  description:
    'The image as the raw body (any image/* type or application/octet-stream), or multipart/form-data with one file ' +
    'field and the options as text fields (same names as the query parameters).',
  content: {
    'image/*': { schema: { type: 'string', format: 'binary' } },
    'application/octet-stream': { schema: { type: 'string', format: 'binary' } },
    'multipart/form-data': {
      schema: {
        type: 'object',
        required: ['image'],
        properties: {
          image: { type: 'string', format: 'binary' },
          ...Object.fromEntries(Object.entries(OPTION_FIELDS).map(([k, kind]) => [k, { type: kind, description: OPTION_TEXT[k as OptionField] }])),
          format: { type: 'string', enum: ['png', 'jpeg', 'webp', 'tiff'] },
        },
      },
    },
  },
};

const submitErrors = {
  400: errorResponse('Bad option, missing image or malformed body (ERR_INVALID_OPTION, ERR_IMAGE_MISSING, ERR_BAD_REQUEST)'),
  401: errorResponse('Missing or invalid API key'),
  413: errorResponse('Body too large, or image above the pixel limits (ERR_BODY_TOO_LARGE, ERR_IMAGE_TOO_LARGE, ERR_BLOB_TOO_LARGE)'),
  415: errorResponse('Unsupported content type'),
  422: errorResponse('The body is not a readable image (ERR_IMAGE_UNREADABLE)'),
  429: {
    ...errorResponse('Queue full (ERR_QUEUE_FULL); retry after the Retry-After header'),
    headers: { 'Retry-After': { schema: { type: 'integer' }, description: 'Seconds' } },
  },
  503: errorResponse('Loading, draining, no usable device or worker, Redis unreachable or full (ERR_NOT_READY, ERR_DRAINING, ERR_REDIS_UNAVAILABLE)'),
};

const jobId = { name: 'id', in: 'path', required: true, schema: { type: 'string', format: 'uuid' } };

export function openApiDocument(version: string, authEnabled: boolean) {
  const security = authEnabled ? [{ bearer: [] }] : [];
  return {
    openapi: '3.1.0',
    info: {
      title: 'xpsr serve',
      version,
      description:
        'XPSR diffusion super-resolution over HTTP: synchronous calls, queued jobs with progress events, ' +
        'health, readiness and Prometheus metrics. Every error is JSON { code, message }.',
    },
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'API key (when the server has any)' } },
      schemas: {
        Error: {
          type: 'object',
          required: ['code', 'message'],
          properties: { code: { type: 'string', examples: ['ERR_INVALID_OPTION'] }, message: { type: 'string' } },
        },
        JobStatus: {
          type: 'object',
          required: ['id', 'state', 'position', 'stage', 'step', 'total', 'progress', 'createdAt', 'error', 'result'],
          properties: {
            id: { type: 'string', format: 'uuid' },
            state: { type: 'string', enum: ['queued', 'running', 'done', 'failed', 'cancelled'] },
            position: { type: ['integer', 'null'], description: 'Jobs ahead in the queue (0 = next); null unless queued' },
            stage: { type: ['string', 'null'], enum: ['text', 'encode', 'denoise', 'decode', 'colorfix', null] },
            step: { type: 'integer' },
            total: { type: 'integer' },
            progress: { type: 'number', minimum: 0, maximum: 1 },
            device: { type: ['string', 'null'] },
            createdAt: { type: 'string', format: 'date-time' },
            startedAt: { type: ['string', 'null'], format: 'date-time' },
            finishedAt: { type: ['string', 'null'], format: 'date-time' },
            expiresAt: { type: ['string', 'null'], format: 'date-time', description: 'When the finished job and its result are forgotten' },
            error: { oneOf: [error, { type: 'null' }] },
            result: {
              oneOf: [
                { type: 'null' },
                {
                  type: 'object',
                  properties: {
                    format: { type: 'string' },
                    contentType: { type: 'string' },
                    bytes: { type: 'integer' },
                    width: { type: 'integer' },
                    height: { type: 'integer' },
                    seed: { type: 'integer' },
                    prompts: { type: 'object', properties: { high: { type: 'string' }, low: { type: 'string' } } },
                    timingsMs: { type: 'object', additionalProperties: { type: 'number' } },
                    batchSize: { type: 'integer', description: 'Images that shared the denoising passes (1 = alone; local devices only)' },
                  },
                },
              ],
            },
          },
        },
      },
    },
    security,
    paths: {
      '/v1/upscale': {
        post: {
          summary: 'Upscale one image and answer with it (synchronous; the job is cancelled if the client disconnects)',
          parameters: optionParameters(),
          requestBody: imageRequestBody,
          responses: {
            200: {
              description: 'The upscaled image',
              headers: {
                'X-Xpsr-Seed': { schema: { type: 'integer' } },
                'X-Xpsr-Prompt-High': { schema: { type: 'string' }, description: 'URI-encoded' },
                'X-Xpsr-Prompt-Low': { schema: { type: 'string' }, description: 'URI-encoded' },
                'X-Xpsr-Prompts-Truncated': { schema: { type: 'string' }, description: "'true' when a caption was cut at 1000 characters" },
                'X-Xpsr-Batch-Size': { schema: { type: 'integer' }, description: 'Images that shared the denoising passes (serve --max-batch)' },
                'Server-Timing': { schema: { type: 'string' }, description: 'Per-stage wall time' },
              },
              content: imageContent,
            },
            ...submitErrors,
            500: errorResponse('The job failed inside the engine'),
          },
        },
      },
      '/v1/jobs': {
        post: {
          summary: 'Queue a job',
          parameters: optionParameters(),
          requestBody: imageRequestBody,
          responses: {
            202: {
              description: 'Accepted; poll /v1/jobs/{id} or stream /v1/jobs/{id}/events',
              headers: { Location: { schema: { type: 'string' } } },
              content: { 'application/json': { schema: { $ref: '#/components/schemas/JobStatus' } } },
            },
            ...submitErrors,
          },
        },
      },
      '/v1/jobs/{id}': {
        get: {
          summary: 'State, progress, queue position, error and result facts of a job',
          parameters: [jobId],
          responses: {
            200: { description: 'The job', content: { 'application/json': { schema: { $ref: '#/components/schemas/JobStatus' } } } },
            404: errorResponse('Unknown or expired job id (ERR_JOB_NOT_FOUND)'),
          },
        },
        delete: {
          summary: 'Cancel a queued or running job (a running job stops between steps); answers the final status',
          parameters: [jobId],
          responses: {
            200: { description: 'The job after cancelling', content: { 'application/json': { schema: { $ref: '#/components/schemas/JobStatus' } } } },
            404: errorResponse('Unknown or expired job id'),
            409: errorResponse('The job had already finished (ERR_JOB_FINISHED)'),
          },
        },
      },
      '/v1/jobs/{id}/result': {
        get: {
          summary: 'The image of a done job (kept for the result TTL)',
          parameters: [jobId],
          responses: {
            200: { description: 'The upscaled image', content: imageContent },
            404: errorResponse('Unknown or expired job id'),
            409: errorResponse('Not finished (ERR_JOB_NOT_FINISHED) or cancelled (ERR_CANCELLED, ERR_SHUTDOWN)'),
            422: errorResponse('The job failed on its input (the job error)'),
            500: errorResponse('The job failed (the job error)'),
          },
        },
      },
      '/v1/jobs/{id}/events': {
        get: {
          summary:
            'Server-sent events: "state" (now and on each change), "progress" (each step), then one of "done", "failed", ' +
            '"cancelled"; every data field is a JobStatus',
          parameters: [jobId],
          responses: {
            200: { description: 'Event stream', content: { 'text/event-stream': { schema: { type: 'string' } } } },
            404: errorResponse('Unknown or expired job id'),
          },
        },
      },
      '/v1/info': {
        get: {
          summary: 'Devices, limits and whether a captioner is configured',
          responses: { 200: { description: 'Server facts', content: { 'application/json': { schema: { type: 'object' } } } } },
        },
      },
      '/healthz': {
        get: {
          summary: 'Liveness (the process answers)',
          security: [],
          responses: { 200: { description: 'Alive', content: { 'application/json': { schema: { type: 'object' } } } } },
        },
      },
      '/readyz': {
        get: {
          summary: 'Readiness: weights loaded, every device usable, accepting jobs',
          security: [],
          responses: {
            200: { description: 'Ready', content: { 'application/json': { schema: { type: 'object' } } } },
            503: errorResponse('Loading, draining, a device unusable, no worker or Redis unreachable (ERR_NOT_READY, ERR_DRAINING)'),
          },
        },
      },
      '/metrics': {
        get: {
          summary: 'Prometheus metrics',
          responses: { 200: { description: 'Text exposition format', content: { 'text/plain': { schema: { type: 'string' } } } } },
        },
      },
      '/openapi.json': {
        get: {
          summary: 'This document',
          security: [],
          responses: { 200: { description: 'OpenAPI 3.1', content: { 'application/json': { schema: { type: 'object' } } } } },
        },
      },
      '/': {
        get: {
          summary: 'The web page (upload, progress, before/after comparison, download)',
          security: [],
          responses: { 200: { description: 'HTML', content: { 'text/html': { schema: { type: 'string' } } } } },
        },
      },
    },
  };
}
