#!/usr/bin/env node
/**
 * The `xpsr` command: upscale, caption, demo, doctor, parity. Each subcommand lives in its own module;
 * this file only dispatches and turns errors into a message and a non-zero exit code.
 */
import { runParityCommand } from './parity.js';

const HELP = `xpsr — XPSR diffusion super-resolution (native, no Python)

Usage:
  xpsr upscale <files or folders...> -o <file or folder> [options]   restore and upscale images
  xpsr caption <images...> [options]                                  write high/low-level captions
  xpsr demo                                                           installation check on a bundled image
  xpsr doctor [--weights DIR]                                         build, backends, CPU features, GPUs, weights check
  xpsr parity --fixtures DIR                                          compare with golden outputs of the official code
  xpsr serve --sd DIR --xpsr DIR [--device LIST] [--port N]           HTTP server: job API, metrics, web page
  xpsr serve --redis URL [--port N]                                   the same server in front of remote workers
  xpsr worker --redis URL --sd DIR --xpsr DIR [--device cuda:0]       GPU worker of the Redis queue

Run 'xpsr <command> --help' for the options of a command.
`;

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'parity':
      return runParityCommand(rest);
    case 'upscale':
      return (await import('./upscale.js')).runUpscaleCommand(rest);
    case 'caption':
      return (await import('./caption.js')).runCaptionCommand(rest);
    case 'demo':
      return (await import('./demo.js')).runDemoCommand(rest);
    case 'doctor':
      return (await import('./doctor.js')).runDoctorCommand(rest);
    case 'serve':
      return (await import('./serve.js')).runServeCommand(rest);
    case 'worker':
      return (await import('./worker.js')).runWorkerCommand(rest);
    case undefined:
    case '--help':
    case '-h':
    case 'help':
      process.stdout.write(HELP);
      return cmd === undefined ? 1 : 0;
    case '--version':
    case '-v': {
      const { readFileSync } = await import('node:fs');
      const { packageRoot } = await import('../native.js');
      const pkg = JSON.parse(readFileSync(`${packageRoot}/package.json`, 'utf8')) as { version: string };
      process.stdout.write(`${pkg.version}\n`);
      return 0;
    }
    default:
      process.stderr.write(`xpsr: unknown command '${cmd}'\n\n${HELP}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    const err = e as { code?: string; message?: string };
    process.stderr.write(`xpsr: ${err?.message ?? String(e)}${err?.code ? ` [${err.code}]` : ''}\n`);
    process.exitCode = 1;
  },
);
