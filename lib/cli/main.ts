#!/usr/bin/env node
/**
 * The `xpsr` command: upscale, caption, demo, doctor, parity, bench, serve... Each subcommand lives in its own module;
 * this file only dispatches and turns an error that ends a command into a message and an exit status
 * (lib/cli/common.ts EXIT: 0 ok, 1 failed, 2 usage error, 130 interrupted).
 */
import { EXIT, describeError, exitStatusFor } from './common.js';

const HELP = `xpsr — XPSR diffusion super-resolution (native, no Python)

Usage:
  xpsr upscale <files or folders...> -o <file or folder> [options]   restore and upscale images
  xpsr caption <images...> [options]                                  write high/low-level captions
  xpsr demo                                                           installation check on a bundled image
  xpsr doctor [--sd DIR] [--xpsr DIR] [--verbose]                     build, backends, devices, weights check
  xpsr build [--cuda auto|on|off]                                     build the native addons from source
  xpsr parity --fixtures DIR                                          compare with golden outputs of the official code
  xpsr bench --synthetic [--latent N] [--steps N] [--batch 1,2,4]     images/s, latency and memory per batch size
  xpsr serve --sd DIR --xpsr DIR [--device LIST] [--port N]           HTTP server: job API, metrics, web page
  xpsr serve --redis URL [--port N]                                   the same server in front of remote workers
  xpsr export onnx --sd DIR --xpsr DIR --out DIR                      ONNX files of every network (TensorRT path)
  xpsr worker --redis URL --sd DIR --xpsr DIR [--device cuda:0]       GPU worker of the Redis queue

Run 'xpsr <command> --help' for the options of a command.
Exit status: 0 ok, 1 something failed, 2 usage error (nothing was run), 130 interrupted (143 terminated).
`;

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'parity':
      return (await import('./parity.js')).runParityCommand(rest);
    case 'upscale':
      return (await import('./upscale.js')).runUpscaleCommand(rest);
    case 'caption':
      return (await import('./caption.js')).runCaptionCommand(rest);
    case 'bench':
      return (await import('./bench.js')).runBenchCommand(rest);
    case 'demo':
      return (await import('./demo.js')).runDemoCommand(rest);
    case 'doctor':
      return (await import('./doctor.js')).runDoctorCommand(rest);
    case 'serve':
      return (await import('./serve.js')).runServeCommand(rest);
    case 'export':
      return (await import('./export.js')).runExportCommand(rest);
    case 'build':
      return (await import('./build.js')).runBuildCommand(rest);
    case 'worker':
      return (await import('./worker.js')).runWorkerCommand(rest);
    case '--help':
    case '-h':
    case 'help':
      process.stdout.write(HELP);
      return EXIT.OK;
    case undefined:
      process.stderr.write(HELP);
      return EXIT.USAGE;
    case '--version':
    case '-v': {
      const { readFileSync } = await import('node:fs');
      const { packageRoot } = await import('../native.js');
      const pkg = JSON.parse(readFileSync(`${packageRoot}/package.json`, 'utf8')) as { version: string };
      process.stdout.write(`${pkg.version}\n`);
      return EXIT.OK;
    }
    default:
      process.stderr.write(`xpsr: unknown command '${cmd}'\n\n${HELP}`);
      return EXIT.USAGE;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`xpsr: ${describeError(e)}\n`);
    process.exitCode = exitStatusFor(e);
  },
);
