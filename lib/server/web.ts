/**
 * The web page at `/`: plain HTML, CSS and JS from lib/server/web/ (no build step), read once at start
 * and served from memory. It talks to the same public API as any client (POST /v1/jobs, the event
 * stream, the result), so it needs no route of its own.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { packageRoot } from '../native.js';

const FILES: Record<string, [string, string]> = {
  '/': ['index.html', 'text/html; charset=utf-8'],
  '/app.js': ['app.js', 'text/javascript; charset=utf-8'],
  '/style.css': ['style.css', 'text/css; charset=utf-8'],
};

export const WEB_ROUTES = Object.keys(FILES);

export function registerWebPage(app: FastifyInstance): void {
  const dir = path.join(packageRoot, 'lib', 'server', 'web');
  for (const [route, [file, type]] of Object.entries(FILES)) {
    const body = readFileSync(path.join(dir, file));
    app.get(route, async (_req, reply) =>
      reply
        .header('Content-Type', type)
        .header('Cache-Control', 'no-cache')
        .header('X-Content-Type-Options', 'nosniff')
        .header('Content-Security-Policy', "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; connect-src 'self'")
        .send(body),
    );
  }
}
