// Helpers for the server tests: tiny inputs, quick options, an SSE reader, polling, crafted bodies.
import http from 'node:http';
import { crc32 } from 'node:zlib';
import sharp from 'sharp';

/** Options that make a job take a few tens of ms on the tiny model (one step, 64 px, no CFG). */
export const QUICK = {
  steps: '1',
  processSize: '64',
  scale: '1',
  guidanceScale: '1',
  colorFix: 'none',
  'prompts.high': 'a cup',
  'prompts.low': 'blurry',
};

export const query = (o) => new URLSearchParams(o).toString();

/** A small PNG with a colour that depends on `seed` (so results differ). */
export async function tinyPng(seed = 0, width = 16, height = 16) {
  return sharp({ create: { width, height, channels: 3, background: { r: (seed * 37) % 256, g: (seed * 91) % 256, b: 120 } } })
    .png()
    .toBuffer();
}

/** A PNG whose header declares width x height (with valid CRCs) but that carries no real pixel data. */
export function pngDeclaring(width, height) {
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(body));
    return Buffer.concat([len, body, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', Buffer.from([0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01])),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

/** POSTs raw image bytes. */
export function postImage(url, body, { type = 'image/png', headers = {}, signal } = {}) {
  return fetch(url, { method: 'POST', body, headers: { 'content-type': type, ...headers }, signal });
}

/**
 * Reads a job's event stream to its end; returns [{ event, data }]. `onEvent` sees each as it arrives.
 */
export async function readEvents(url, { headers = {}, onEvent } = {}) {
  const res = await fetch(url, { headers });
  if (res.status !== 200) throw new Error(`events: HTTP ${res.status} ${await res.text()}`);
  if (!res.headers.get('content-type').startsWith('text/event-stream')) throw new Error('events: not an event stream');
  const events = [];
  const decoder = new TextDecoder();
  let buffer = '';
  for await (const chunk of res.body) {
    buffer += decoder.decode(chunk, { stream: true });
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      if (block.startsWith(':')) continue;
      const event = /^event: (.*)$/m.exec(block)?.[1];
      const data = JSON.parse(/^data: (.*)$/m.exec(block)[1]);
      events.push({ event, data });
      onEvent?.({ event, data });
    }
  }
  return events;
}

/** Polls `fn` until it returns a truthy value (or throws after `timeoutMs`). */
export async function waitFor(fn, { timeoutMs = 20_000, intervalMs = 10, what = 'condition' } = {}) {
  const t0 = Date.now();
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Sends a request with raw bytes over a socket we control (for truncated bodies and lying headers). */
export function rawRequest(url, { method = 'POST', path = '/', headers = {}, body = Buffer.alloc(0), endAfterWrite = true } = {}) {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: u.hostname, port: u.port, method, path, headers }, (res) => {
      const parts = [];
      res.on('data', (c) => parts.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(parts) }));
    });
    req.on('error', reject);
    req.write(body);
    if (endAfterWrite) req.end();
  });
}

/** A metric's value (sum over the series that match `labels`) from Prometheus text. */
export function metric(text, name, labels = {}) {
  let sum = 0;
  let found = false;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{([^}]*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries(
      (m[3] ?? '')
        .split(',')
        .filter(Boolean)
        .map((kv) => {
          const i = kv.indexOf('=');
          return [kv.slice(0, i), JSON.parse(kv.slice(i + 1))];
        }),
    );
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) {
      sum += Number(m[4]);
      found = true;
    }
  }
  return found ? sum : undefined;
}
