/**
 * The local Hugging Face hub cache, read offline: a repo id such as `stable-diffusion-v1-5/stable-diffusion-v1-5`
 * becomes the folder of its newest complete snapshot. The cache layout (huggingface_hub):
 *
 *   <cache>/models--<org>--<name>/refs/main            commit hash of the last `main` downloaded
 *   <cache>/models--<org>--<name>/snapshots/<commit>/  the repo's files, as links into ../../blobs/
 *
 * <cache> is HF_HUB_CACHE (or the older HUGGINGFACE_HUB_CACHE), else HF_HOME/hub, else
 * XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub. The snapshot refs/main names comes first,
 * then the others, newest first; one the caller finds incomplete (an interrupted download, a link whose blob
 * is gone) is skipped. Nothing is ever downloaded; when nothing fits, the error lists every place looked at.
 */
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import { XpsrError } from '../errors.js';

/** `org/name` (the hub's repo id syntax) that is not an existing path. */
export function isRepoId(s: string): boolean {
  return /^[A-Za-z0-9][\w.-]*\/[A-Za-z0-9][\w.-]*$/.test(s) && !s.includes('..') && !existsSync(s);
}

/** The cache folders to look in, in order (duplicates removed). */
export function hubCacheDirs(env: NodeJS.ProcessEnv = process.env): string[] {
  const dirs: string[] = [];
  if (env.HF_HUB_CACHE) dirs.push(env.HF_HUB_CACHE);
  if (env.HUGGINGFACE_HUB_CACHE) dirs.push(env.HUGGINGFACE_HUB_CACHE);
  if (env.HF_HOME) dirs.push(path.join(env.HF_HOME, 'hub'));
  if (env.XDG_CACHE_HOME) dirs.push(path.join(env.XDG_CACHE_HOME, 'huggingface', 'hub'));
  dirs.push(path.join(homedir(), '.cache', 'huggingface', 'hub'));
  return [...new Set(dirs.map((d) => path.resolve(d)))];
}

export interface Snapshot {
  /** The snapshot folder (its files are links into the cache's blobs). */
  dir: string;
  revision: string;
  cache: string;
}

function mtime(p: string): number {
  try {
    return statSync(p).mtimeMs;
  } catch {
    return 0;
  }
}

/**
 * The newest complete snapshot of `repoId`. `missing(dir)` says what a snapshot lacks (undefined when it
 * is complete). Throws ERR_WEIGHTS_MISSING listing every cache folder and snapshot looked at.
 */
export function resolveRepoSnapshot(
  repoId: string,
  missing: (dir: string) => string | undefined,
  env: NodeJS.ProcessEnv = process.env,
  what = 'weights',
): Snapshot {
  const looked: string[] = [];
  const repoFolder = `models--${repoId.split('/').join('--')}`;
  for (const cache of hubCacheDirs(env)) {
    const repo = path.join(cache, repoFolder);
    const snapshots = path.join(repo, 'snapshots');
    let revisions: string[];
    try {
      revisions = readdirSync(snapshots).filter((r) => !r.startsWith('.'));
    } catch {
      looked.push(`${repo}: ${existsSync(repo) ? 'no snapshots/ folder' : 'not there'}`);
      continue;
    }
    let main: string | undefined;
    try {
      main = readFileSync(path.join(repo, 'refs', 'main'), 'utf8').trim();
    } catch {
      /* no refs/main: only the snapshots' age decides */
    }
    revisions.sort((a, b) => (a === main ? -1 : b === main ? 1 : mtime(path.join(snapshots, b)) - mtime(path.join(snapshots, a))));
    if (revisions.length === 0) looked.push(`${snapshots}: empty`);
    for (const revision of revisions) {
      const dir = path.join(snapshots, revision);
      const lack = missing(dir);
      if (!lack) return { dir, revision, cache };
      looked.push(`${dir}${revision === main ? ' (refs/main)' : ''}: incomplete, ${lack}`);
    }
  }
  throw new XpsrError(
    'ERR_WEIGHTS_MISSING',
    `'${repoId}' is not a folder or a file, and no complete snapshot of the Hugging Face repo ${repoId} (${what}) is in the ` +
      `local cache (nothing is downloaded). Looked at:\n  ${looked.join('\n  ')}\n` +
      `Download it first (for example \`huggingface-cli download ${repoId}\`), or set HF_HUB_CACHE or HF_HOME to the cache that holds it.`,
    { repoId, looked },
  );
}
