/**
 * What `xpsr upscale` tells the user while it runs, in one of three forms:
 *   - a terminal on stderr: a redrawn bar per image and overall;
 *   - stderr not a terminal (a log file, CI): plain lines, one per stage and at most one per
 *     PLAIN_INTERVAL_MS while denoising, never a carriage return;
 *   - --json: one JSON object per line on stdout (events: loaded, progress, done, error, skipped,
 *     cancelled, summary); stderr then carries only errors.
 * --quiet keeps only the error lines.
 */
import type { ProgressEvent } from '../pipeline/core.js';
import type { UpscaleResult } from '../xpsr.js';
import { errorCode } from './common.js';

/** Shortest time between two plain progress lines of one denoising loop. */
export const PLAIN_INTERVAL_MS = 10_000;

function bar(frac: number, width = 24): string {
  const n = Math.round(Math.max(0, Math.min(1, frac)) * width);
  return `[${'#'.repeat(n)}${'.'.repeat(width - n)}]`;
}

const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

export class ProgressReporter {
  readonly #quiet: boolean;
  readonly #json: boolean;
  readonly #tty: boolean;
  readonly #total: number;
  #barShown = false;
  #lastStage = '';
  #lastLine = 0;

  constructor(o: { quiet: boolean; json: boolean; total: number; tty?: boolean }) {
    this.#quiet = o.quiet;
    this.#json = o.json;
    this.#total = o.total;
    this.#tty = (o.tty ?? process.stderr.isTTY === true) && !o.quiet && !o.json;
  }

  #emit(o: object) {
    if (this.#json) process.stdout.write(JSON.stringify(o) + '\n');
  }

  /** A human line on stderr (not in quiet or JSON mode). */
  #line(s: string) {
    if (this.#quiet || this.#json) return;
    this.#endBar();
    process.stderr.write(s + '\n');
  }

  #endBar() {
    if (this.#barShown) process.stderr.write('\n');
    this.#barShown = false;
  }

  #tag(i: number) {
    return `[${i + 1}/${this.#total}]`;
  }

  note(message: string) {
    this.#line(message);
  }

  loaded(device: string, description: string, ms: number) {
    this.#line(`xpsr: models loaded on ${device} (${description}) in ${secs(ms)}`);
    this.#emit({ event: 'loaded', device, description, ms });
  }

  start(i: number, input: string) {
    this.#lastStage = '';
    this.#lastLine = 0;
    if (!this.#tty) this.#line(`xpsr: ${this.#tag(i)} ${input}`);
  }

  progress(i: number, input: string, e: ProgressEvent) {
    this.#emit({ event: 'progress', input, ...e });
    if (this.#quiet || this.#json) return;
    const frac = e.stage === 'denoise' ? e.step / e.total : e.stage === 'decode' || e.stage === 'colorfix' ? 1 : 0;
    if (this.#tty) {
      const name = input.split(/[\\/]/).pop()!.slice(0, 24).padEnd(24);
      process.stderr.write(
        `\r${name} ${bar(frac)} ${e.stage.padEnd(8)} ${e.stage === 'denoise' ? `${e.step}/${e.total}` : ''}` +
          `  all ${bar((i + frac) / this.#total, 12)} ${i + 1}/${this.#total}   `,
      );
      this.#barShown = true;
      return;
    }
    const now = performance.now();
    const newStage = e.stage !== this.#lastStage;
    const lastStep = e.stage === 'denoise' && e.step === e.total && e.tile === undefined;
    if (!newStage && !lastStep && now - this.#lastLine < PLAIN_INTERVAL_MS) return;
    this.#lastStage = e.stage;
    this.#lastLine = now;
    const step = e.stage === 'denoise' ? ` ${e.step}/${e.total}${e.tile !== undefined ? ` tile ${e.tile}/${e.tiles}` : ''}` : '';
    this.#line(`xpsr: ${this.#tag(i)} ${input}: ${e.stage}${step} (${secs(e.elapsedMs)})`);
  }

  done(i: number, input: string, output: string, r: UpscaleResult, device: string) {
    this.#line(`xpsr: ${this.#tag(i)} ${input} -> ${output} (${r.width}x${r.height}, seed ${r.seed}, ${secs(r.timingsMs.total)})`);
    this.#emit({ event: 'done', input, output, width: r.width, height: r.height, seed: r.seed, device, prompts: r.prompts, timingsMs: r.timingsMs });
  }

  skipped(i: number, input: string, output: string) {
    this.#line(`xpsr: ${this.#tag(i)} ${input}: skipped, ${output} exists (--overwrite replaces it)`);
    this.#emit({ event: 'skipped', input, output, reason: 'output exists' });
  }

  failed(i: number, input: string, e: unknown, message: string) {
    this.#endBar();
    process.stderr.write(`xpsr: ${this.#tag(i)} ${input}: ${message}\n`);
    this.#emit({ event: 'error', input, code: errorCode(e) ?? 'ERR_INTERNAL', message });
  }

  cancelled(i: number, input: string) {
    this.#line(`xpsr: ${this.#tag(i)} ${input}: cancelled`);
    this.#emit({ event: 'cancelled', input });
  }

  summary(c: { written: number; skipped: number; failed: number; notRun: number }, cancelled: boolean, device: string | undefined) {
    const parts = [`${c.written} written`, `${c.skipped} skipped`, `${c.failed} failed`];
    if (cancelled) parts.push(`interrupted (${c.notRun} not run)`);
    this.#line(`xpsr: ${parts.join(', ')}`);
    this.#emit({ event: 'summary', ...c, cancelled, device: device ?? null });
  }
}
