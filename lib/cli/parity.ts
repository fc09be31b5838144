/**
 * `xpsr parity --fixtures DIR [--device cpu|cuda] [--only a,b] [--json]`: runs every parity check whose
 * files are present in DIR, prints one line per compared tensor, ends with `parity: N passed, M failed`
 * and exits non-zero on any failure.
 */
import { formatLine, runParity } from '../parity/index.js';

export async function runParityCommand(argv: string[]): Promise<number> {
  let dir: string | undefined;
  let device = 'cpu';
  let only: string[] | undefined;
  let json = false;
  let engine: 'native' | 'onnxruntime' = 'native';
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--fixtures') dir = value();
    else if (a === '--device') device = value();
    else if (a === '--only') only = value().split(',');
    else if (a === '--json') json = true;
    else if (a === '--engine') {
      const v = value();
      if (v !== 'native' && v !== 'onnxruntime') throw new Error(`--engine must be 'native' or 'onnxruntime', got '${v}'`);
      engine = v;
    }
    else if (a === '--help' || a === '-h') {
      process.stdout.write(
        'Usage: xpsr parity --fixtures DIR [--device cpu|cuda|cuda:N] [--engine native|onnxruntime] [--only name,...] [--json]\n\n' +
          'Reproduces golden outputs of the official XPSR code stored in DIR (weights in DIR/model/<component>,\n' +
          'inputs and expected tensors in DIR/<component>.safetensors) and prints max_abs, max_rel, tolerance and\n' +
          'PASS/FAIL per tensor. Components whose files are absent are listed and skipped.\n' +
          '--engine onnxruntime exports the fixture model to ONNX and checks the exported networks with onnxruntime (CPU).\n',
      );
      return 0;
    } else throw new Error(`unknown option '${a}' (see xpsr parity --help)`);
  }
  if (!dir) throw new Error('xpsr parity needs --fixtures DIR');
  const report = await runParity(dir, {
    device,
    engine,
    only,
    onLine: (l) => process.stdout.write((json ? JSON.stringify(l) : formatLine(l)) + '\n'),
    onSkip: (c, reason) => process.stdout.write(json ? JSON.stringify({ component: c, skipped: reason }) + '\n' : `SKIP  ${c.padEnd(22)} ${reason}\n`),
  });
  process.stdout.write(`parity: ${report.passed} passed, ${report.failed} failed\n`);
  return report.failed === 0 && report.passed > 0 ? 0 : 1;
}
