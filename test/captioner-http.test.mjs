// HttpCaptioner against a local OpenAI-compatible test server (127.0.0.1 only).
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';

import test from 'ava';

import { HttpCaptioner, parseChatCompletion, resolveChatCompletionsUrl } from '../dist/lib/captioners/http.js';
import { HIGH, LOW, tempDir, testRgb, writeTestPng } from './helpers/gguf-captioner.mjs';

const tmp = tempDir('xpsr-http-');
const img = writeTestPng(path.join(tmp.dir, 'pic.png'), 5);
test.after.always(() => tmp.cleanup());

/** A server whose behaviour per request comes from `handler(req, body, n)`; records requests. */
async function server(handler) {
  const requests = [];
  const sockets = new Set();
  const s = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => {
      body += c;
    });
    req.on('end', () => {
      const rec = { method: req.method, url: req.url, headers: req.headers, body: body ? JSON.parse(body) : undefined };
      requests.push(rec);
      handler(req, res, rec, requests.length);
    });
  });
  s.on('connection', (c) => {
    sockets.add(c);
    c.on('close', () => sockets.delete(c));
  });
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${s.address().port}`;
  return {
    base,
    requests,
    close: () =>
      new Promise((r) => {
        sockets.forEach((c) => c.destroy());
        s.close(r);
      }),
  };
}

const reply = (res, status, obj, headers = {}) => {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(typeof obj === 'string' ? obj : JSON.stringify(obj));
};
const completion = (content) => ({ id: 'x', object: 'chat.completion', choices: [{ index: 0, message: { role: 'assistant', content } }] });

test('URL resolution', (t) => {
  t.is(resolveChatCompletionsUrl('http://h:8080'), 'http://h:8080/v1/chat/completions');
  t.is(resolveChatCompletionsUrl('http://h:8080/'), 'http://h:8080/v1/chat/completions');
  t.is(resolveChatCompletionsUrl('http://h:8080/v1'), 'http://h:8080/v1/chat/completions');
  t.is(resolveChatCompletionsUrl('https://h/api/v1/'), 'https://h/api/v1/chat/completions');
  t.is(resolveChatCompletionsUrl('http://h/x/chat/completions'), 'http://h/x/chat/completions');
  t.is(t.throws(() => resolveChatCompletionsUrl('ftp://h')).code, 'ERR_INVALID_OPTION');
  t.is(t.throws(() => resolveChatCompletionsUrl('not a url')).code, 'ERR_INVALID_OPTION');
});

test('sends the OpenAI chat format with the image as a data URL, one request per instruction', async (t) => {
  const s = await server((req, res, rec) => {
    const text = rec.body.messages.at(-1).content[1].text;
    reply(res, 200, completion(text === HIGH ? ' A photo\nof a cat.' : 'ASSISTANT: Sharp, little noise.'));
  });
  try {
    const c = new HttpCaptioner({ url: s.base, model: 'llava-1.5-7b', apiKey: 'k123', maxTokens: 99, systemPrompt: 'be brief' });
    t.is(c.endpoint, `${s.base}/v1/chat/completions`);
    t.deepEqual(await c.caption(img, [HIGH, LOW]), ['A photo of a cat.', 'Sharp, little noise.']);
    t.is(s.requests.length, 2);
    const r = s.requests[0];
    t.is(r.method, 'POST');
    t.is(r.url, '/v1/chat/completions');
    t.is(r.headers.authorization, 'Bearer k123');
    t.is(r.headers['content-type'], 'application/json');
    t.is(r.body.model, 'llava-1.5-7b');
    t.is(r.body.max_tokens, 99);
    t.is(r.body.temperature, 0);
    t.false(r.body.stream);
    t.deepEqual(r.body.messages[0], { role: 'system', content: 'be brief' });
    const [image, text] = r.body.messages[1].content;
    t.is(image.type, 'image_url');
    t.regex(image.image_url.url, /^data:image\/png;base64,iVBORw0KGgo/);
    t.deepEqual(Buffer.from(image.image_url.url.split(',')[1], 'base64'), fs.readFileSync(img), 'the file as it is');
    t.deepEqual(text, { type: 'text', text: HIGH });
    // raw pixels and formats servers do not read (TIFF) are sent as PNG; content given as parts is joined
    const s2 = await server((req, res) =>
      reply(res, 200, {
        choices: [
          {
            message: {
              content: [
                { type: 'text', text: 'a' },
                { type: 'text', text: 'b' },
              ],
            },
          },
        ],
      }),
    );
    try {
      const c2 = new HttpCaptioner({ url: `${s2.base}/v1` });
      t.deepEqual(await c2.caption(testRgb(8, 8), [HIGH]), ['ab']);
      t.regex(s2.requests[0].body.messages[0].content[0].image_url.url, /^data:image\/png;base64,/);
      t.is(s2.requests[0].headers.authorization, undefined);
      const { default: sharp } = await import('sharp');
      const rgb = testRgb(8, 8);
      const tiff = await sharp(Buffer.from(rgb.data), { raw: { width: 8, height: 8, channels: 3 } })
        .tiff({ compression: 'lzw' })
        .toBuffer();
      await c2.caption(new Uint8Array(tiff), [HIGH]);
      const sent = Buffer.from(s2.requests[1].body.messages[0].content[0].image_url.url.split(',')[1], 'base64');
      t.deepEqual(new Uint8Array(await sharp(sent).raw().toBuffer()), rgb.data);
      t.regex(s2.requests[1].body.messages[0].content[0].image_url.url, /^data:image\/png;base64,/);
    } finally {
      await s2.close();
    }
  } finally {
    await s.close();
  }
});

test('retries 5xx and 429 (honouring Retry-After), then succeeds', async (t) => {
  const s = await server((req, res, rec, n) => {
    if (n === 1) return reply(res, 503, { error: { message: 'loading model' } });
    if (n === 2) return reply(res, 429, { error: 'slow down' }, { 'retry-after': '0' });
    reply(res, 200, completion('ok'));
  });
  try {
    const c = new HttpCaptioner({ url: s.base, retries: 2, retryDelayMs: 5 });
    t.deepEqual(await c.caption(img, [HIGH]), ['ok']);
    t.is(s.requests.length, 3);
  } finally {
    await s.close();
  }
});

test('error statuses map to clear codes', async (t) => {
  const cases = [
    [401, { error: { message: 'bad key' } }, 'ERR_CAPTION_AUTH', /refused the credentials.*bad key/, 1],
    [403, 'forbidden', 'ERR_CAPTION_AUTH', /HTTP 403/, 1],
    [404, 'Not Found', 'ERR_CAPTION_SERVER', /OpenAI-compatible/, 1],
    [400, { error: { message: 'image input is not supported' } }, 'ERR_CAPTION_SERVER', /not supported.*--mmproj/, 1],
    [422, { detail: 'bad field' }, 'ERR_CAPTION_SERVER', /bad field/, 1],
    [500, { error: { message: 'boom' } }, 'ERR_CAPTION_SERVER', /HTTP 500: boom \(after 3 attempts\)/, 3],
    [418, 'teapot', 'ERR_CAPTION_SERVER', /HTTP 418: teapot/, 1],
  ];
  for (const [status, body, code, re, attempts] of cases) {
    const s = await server((req, res) => reply(res, status, body));
    try {
      const c = new HttpCaptioner({ url: s.base, retries: 2, retryDelayMs: 1 });
      const e = await t.throwsAsync(c.caption(img, [HIGH]));
      t.is(e.code, code, `HTTP ${status}`);
      t.is(e.details.status, status);
      t.is(e.name, 'XpsrError');
      t.regex(e.message, re);
      t.is(s.requests.length, attempts, `HTTP ${status} attempts`);
    } finally {
      await s.close();
    }
  }
});

test('malformed bodies are ERR_CAPTION_SERVER', async (t) => {
  for (const body of ['<html>oops</html>', '', '{"choices": []}', '{"result": "x"}', '{"choices":[{"message":{"content":42}}]}']) {
    const s = await server((req, res) => reply(res, 200, body));
    try {
      const e = await t.throwsAsync(new HttpCaptioner({ url: s.base }).caption(img, [HIGH]));
      t.is(e.code, 'ERR_CAPTION_SERVER', body);
    } finally {
      await s.close();
    }
  }
  t.is(parseChatCompletion('{"choices":[{"text":"legacy"}]}', 'x'), 'legacy');
  t.is(parseChatCompletion('{"choices":[{"message":{"content":null}}]}', 'x'), '');
});

test('timeouts are retried, then ERR_CAPTION_TIMEOUT', async (t) => {
  const s = await server(() => {
    /* never answers */
  });
  try {
    const e = await t.throwsAsync(new HttpCaptioner({ url: s.base, timeoutMs: 300, retries: 1, retryDelayMs: 1 }).caption(img, [HIGH]));
    t.is(e.code, 'ERR_CAPTION_TIMEOUT');
    t.regex(e.message, /within 300 ms.*after 2 attempts/);
    // the second attempt may be aborted before the server has read its body (a loaded machine)
    t.true(s.requests.length >= 1 && s.requests.length <= 2, `${s.requests.length} requests`);
  } finally {
    await s.close();
  }
  // a body that stalls half-way also times out
  const s2 = await server((req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.write('{"choi');
  });
  try {
    const e = await t.throwsAsync(new HttpCaptioner({ url: s2.base, timeoutMs: 150, retries: 0 }).caption(img, [HIGH]));
    t.is(e.code, 'ERR_CAPTION_TIMEOUT');
  } finally {
    await s2.close();
  }
});

test('an unreachable server is ERR_CAPTION_UNREACHABLE', async (t) => {
  const s = await server(() => {});
  const base = s.base;
  await s.close();
  const e = await t.throwsAsync(new HttpCaptioner({ url: base, retries: 1, retryDelayMs: 1 }).caption(img, [HIGH]));
  t.is(e.code, 'ERR_CAPTION_UNREACHABLE');
  t.regex(e.message, /ECONNREFUSED|cannot reach/);
});

test('an AbortSignal cancels a pending request and a retry wait', async (t) => {
  const s = await server(() => {});
  try {
    const ctl = new AbortController();
    setTimeout(() => ctl.abort(), 100);
    const e = await t.throwsAsync(new HttpCaptioner({ url: s.base, timeoutMs: 60_000 }).caption(img, [HIGH], { signal: ctl.signal }));
    t.is(e.code, 'ERR_CANCELLED');
  } finally {
    await s.close();
  }
  const s2 = await server((req, res) => reply(res, 503, 'busy', { 'retry-after': '20' }));
  try {
    const ctl = new AbortController();
    setTimeout(() => ctl.abort(), 200);
    const started = Date.now();
    const e = await t.throwsAsync(new HttpCaptioner({ url: s2.base, retries: 5 }).caption(img, [HIGH], { signal: ctl.signal }));
    t.is(e.code, 'ERR_CANCELLED');
    t.true(Date.now() - started < 5000);
  } finally {
    await s2.close();
  }
});

test('invalid options and inputs', async (t) => {
  t.is(t.throws(() => new HttpCaptioner({})).code, 'ERR_INVALID_OPTION');
  t.is(t.throws(() => new HttpCaptioner({ url: 'http://127.0.0.1:1', timeoutMs: -1 })).details.option, 'timeoutMs');
  const c = new HttpCaptioner({ url: 'http://127.0.0.1:1' });
  t.is((await t.throwsAsync(c.caption(path.join(tmp.dir, 'missing.png'), [HIGH]))).code, 'ERR_IMAGE_UNREADABLE');
  t.is((await t.throwsAsync(c.caption(new Uint8Array([1, 2, 3]), [HIGH]))).code, 'ERR_IMAGE_UNREADABLE');
  t.is((await t.throwsAsync(c.caption(img, 'not an array'))).code, 'ERR_INVALID_ARGUMENT');
  t.not(new HttpCaptioner({ url: 'http://a', model: 'x' }).id, new HttpCaptioner({ url: 'http://a', model: 'y' }).id);
  t.is(new HttpCaptioner({ url: 'http://a/v1' }).id, new HttpCaptioner({ url: 'http://a' }).id);
});
