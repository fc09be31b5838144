/**
 * What every `xpsr` command shares: the exit statuses, strict flag parsing (an unknown flag or a bad value
 * is a usage error naming the flag), and messages in the CLI's terms (API option names swapped for flags).
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { XpsrError, isXpsrErrorCode, type XpsrErrorCode } from '../errors.js';

/** Exit statuses, the same for every command (README "Exit status"). */
export const EXIT = Object.freeze({
  /** Everything asked for was done. */
  OK: 0,
  /** Something failed: an image (the others were still processed), the weights, the device. */
  FAILED: 1,
  /** The command line is wrong (flag, value, input or output path, weights folders); nothing was run. */
  USAGE: 2,
  /** Interrupted by SIGINT (Ctrl-C); the image in progress was cancelled, no partial file was left. */
  INTERRUPTED: 130,
  /** Terminated by SIGTERM, as for SIGINT. */
  TERMINATED: 143,
});

/** A command-line mistake found before any work started: exit status 2. */
export class UsageError extends XpsrError {
  constructor(message: string, code: XpsrErrorCode = 'ERR_INVALID_OPTION', options?: { cause?: unknown }) {
    super(code, message, undefined, options);
    this.name = 'UsageError';
  }
}

/** The CLI flag of each API option, for messages (`'processSize'` is written `--process-size`). */
export const OPTION_FLAGS: Readonly<Record<string, string>> = Object.freeze({
  sd: '--sd',
  xpsr: '--xpsr',
  model: '--model',
  device: '--device',
  threads: '--threads',
  scale: '--scale',
  processSize: '--process-size',
  steps: '--steps',
  guidanceScale: '--guidance',
  conditioningScale: '--conditioning-scale',
  seed: '--seed',
  scheduler: '--scheduler',
  'prompts.high': '--prompt-high',
  'prompts.low': '--prompt-low',
  addedPrompt: '--added-prompt',
  negativePrompt: '--negative-prompt',
  lowLevelGuidance: '--low-level-guidance',
  longPrompts: '--long-prompts',
  init: '--init',
  addedNoiseLevel: '--added-noise-level',
  colorFix: '--color-fix',
  tiling: '--tiling',
  'tiling.mode': '--tiling',
  'tiling.tileSize': '--tile-size',
  'tiling.overlap': '--tile-overlap',
  'tiling.maxLatentPixels': '--tile-max-pixels',
  'tiling.memoryBudgetMB': '--memory-budget-mb',
  vaeTiling: '--vae-tiling',
  maxInputPixels: '--max-input-pixels',
  maxAspectRatio: '--max-aspect-ratio',
  format: '--format',
  fixtures: '--fixtures',
});

/**
 * A library message in the CLI's terms: every quoted API option name becomes its flag
 * ("Invalid option 'processSize': ..." → "Invalid value for --process-size: ...").
 */
export function cliMessage(message: string): string {
  return message
    .replace(/Invalid option '([A-Za-z.]+)'/g, (m, name: string) => (OPTION_FLAGS[name] ? `Invalid value for ${OPTION_FLAGS[name]}` : m))
    .replace(/'([A-Za-z][A-Za-z.]*)'/g, (m, name: string) => OPTION_FLAGS[name] ?? m);
}

/** "message [CODE]" for stderr, in the CLI's terms. */
export function describeError(e: unknown): string {
  const err = e as { code?: unknown; message?: unknown };
  const message = typeof err?.message === 'string' ? err.message : String(e);
  return `${cliMessage(message)}${typeof err?.code === 'string' ? ` [${err.code}]` : ''}`;
}

/** The code of an error if it is one of ours (XpsrError or a coded error from a subsystem). */
export function errorCode(e: unknown): string | undefined {
  const code = (e as { code?: unknown })?.code;
  return typeof code === 'string' && code.startsWith('ERR_') ? code : undefined;
}

/** The exit status for an error that ended a command. */
export function exitStatusFor(e: unknown): number {
  if (e instanceof UsageError) return EXIT.USAGE;
  if (errorCode(e) === 'ERR_CANCELLED') return EXIT.INTERRUPTED;
  return EXIT.FAILED;
}

/**
 * node:util parseArgs in strict mode; its errors (unknown flag, missing value, a value given to a switch)
 * become UsageErrors that name the flag.
 */
type FlagConfig<T> = { args: string[]; options: T; allowPositionals: boolean; strict: true };
export type ParsedFlags<T extends NonNullable<ParseArgsConfig['options']>> = ReturnType<typeof parseArgs<FlagConfig<T>>>;

export function parseFlags<T extends NonNullable<ParseArgsConfig['options']>>(
  command: string,
  args: string[],
  options: T,
  allowPositionals = false,
): ParsedFlags<T> {
  try {
    return parseArgs<FlagConfig<T>>({ args, options, allowPositionals, strict: true });
  } catch (e) {
    const msg = (e as Error).message.replace(/\. To specify a positional argument starting with a '-'.*$/s, '');
    throw new UsageError(`${command}: ${msg} (see xpsr ${command} --help)`, 'ERR_INVALID_OPTION', { cause: e });
  }
}

/** A number flag: undefined when absent; a UsageError naming the flag when it is not a (whole) number. */
export function numberFlag(flag: string, s: string | undefined, integer = false): number | undefined {
  if (s === undefined) return undefined;
  const n = s.trim() === '' ? NaN : Number(s);
  if (!Number.isFinite(n) || (integer && !Number.isInteger(n)))
    throw new UsageError(`${flag} expects ${integer ? 'an integer' : 'a number'}, got '${s}'`);
  return n;
}

/** A non-negative amount flag (`--max-body-mb`, `--drain-timeout`) times `scale` (MiB -> bytes, s -> ms): undefined when absent. */
export function amountFlag(flag: string, s: string | undefined, scale = 1): number | undefined {
  if (s === undefined) return undefined;
  const n = Number(s);
  if (s.trim() === '' || !Number.isFinite(n) || n < 0) throw new UsageError(`--${flag} expects a non-negative number, got '${s}'`);
  return n * scale;
}

/** One of a fixed set of words, or a UsageError naming the flag and the choices. */
export function choiceFlag<T extends string>(flag: string, s: string | undefined, choices: readonly T[]): T | undefined {
  if (s === undefined) return undefined;
  if (!choices.includes(s as T)) throw new UsageError(`${flag} must be one of ${choices.join(', ')}, got '${s}'`);
  return s as T;
}

/** Runs a command's validation step: anything it throws is a usage error (exit 2) with its own code kept. */
export function asUsage<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof UsageError) throw e;
    const code = errorCode(e);
    throw new UsageError(cliMessage((e as Error)?.message ?? String(e)), isXpsrErrorCode(code) ? code : 'ERR_INVALID_OPTION', { cause: e });
  }
}
