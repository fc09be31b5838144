/**
 * `xpsr parity --fixtures DIR [--device cpu|cuda] [--only a,b] [--json]`: runs every parity check whose
 * files are present in DIR, prints one line per compared tensor (SKIP for reference tensors the engine
 * knowingly does not compute: training-only heads), ends with `parity: N passed, M failed` and exits 1 on
 * any failure (or when nothing was compared), 2 on a usage error.
 */
import { existsSync } from 'node:fs';
import { formatLine, runParity } from '../parity/index.js';
import { EXIT, UsageError, asUsage, parseFlags } from './common.js';
import { checkLoadOptions } from '../options.js';

const HELP =
  'Usage: xpsr parity --fixtures DIR [--device cpu|cuda|cuda:N] [--engine native|onnxruntime] [--only name,...] [--json]\n\n' +
  'Reproduces golden outputs of the official XPSR code stored in DIR (weights in DIR/model/<component>,\n' +
  'inputs and expected tensors in DIR/<component>.safetensors) and prints max_abs, max_rel, tolerance and\n' +
  'PASS/FAIL per tensor; reference tensors of training-only heads are listed as SKIP (not computed, not\n' +
  'counted). Components whose files are absent are listed and skipped.\n' +
  '--engine onnxruntime exports the fixture model to ONNX and checks the exported networks with onnxruntime (CPU).\n' +
  'Exit status: 0 all compared tensors passed, 1 a failure (or nothing compared), 2 usage error.\n';

export async function runParityCommand(argv: string[]): Promise<number> {
  const { values: v } = parseFlags('parity', argv, {
    fixtures: { type: 'string' },
    device: { type: 'string' },
    engine: { type: 'string' },
    only: { type: 'string' },
    json: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  });
  if (v.help) {
    process.stdout.write(HELP);
    return EXIT.OK;
  }
  const dir = v.fixtures;
  if (!dir) throw new UsageError('xpsr parity needs --fixtures DIR');
  if (!existsSync(dir)) throw new UsageError(`--fixtures folder not found: ${dir}`);
  const device = v.device ?? 'cpu';
  asUsage(() => checkLoadOptions({ device, model: dir }));
  const json = !!v.json;
  const engine = v.engine ?? 'native';
  if (engine !== 'native' && engine !== 'onnxruntime') throw new UsageError(`--engine must be 'native' or 'onnxruntime', got '${engine}'`);
  const report = await runParity(dir, {
    device,
    engine,
    only: v.only?.split(','),
    onLine: (l) => process.stdout.write((json ? JSON.stringify(l) : formatLine(l)) + '\n'),
    onSkip: (c, reason) =>
      process.stdout.write(json ? JSON.stringify({ component: c, skipped: reason }) + '\n' : `SKIP  ${c.padEnd(22)} ${reason}\n`),
  });
  const notComputed = report.notComputed ? ` (${report.notComputed} reference tensors of training-only heads not computed: SKIP)` : '';
  process.stdout.write(`parity: ${report.passed} passed, ${report.failed} failed${notComputed}\n`);
  return report.failed === 0 && report.passed > 0 ? EXIT.OK : EXIT.FAILED;
}
