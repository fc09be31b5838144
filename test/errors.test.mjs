// Every error code the library can throw is one of ERROR_CODES (the XpsrErrorCode type), and README's
// table documents each one. The code base is read as text: a code thrown anywhere (TypeScript or the
// native engine, whose codes reach JS unchanged) but missing from the list fails here.
// Excluded: the captioner addon (native/captioner) and the table that maps its internal codes onto the
// library's (lib/captioners/errors.ts): those internal codes never reach a caller.
import test from 'ava';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { ERROR_CODES, XpsrError } from '../dist/lib/index.js';
import { root } from './helpers/fixtures.mjs';

const EXCLUDED = ['lib/captioners/errors.ts', 'native/captioner'];

function sources(dir, exts) {
  const out = [];
  for (const name of readdirSync(path.join(root, dir))) {
    const rel = path.join(dir, name);
    if (EXCLUDED.some((x) => rel === x)) continue;
    if (statSync(path.join(root, rel)).isDirectory()) out.push(...sources(rel, exts));
    else if (exts.some((e) => name.endsWith(e))) out.push(rel);
  }
  return out;
}

const codesIn = (file) => new Set([...readFileSync(path.join(root, file), 'utf8').matchAll(/['"](ERR_[A-Z_]+)['"]/g)].map((m) => m[1]));
const files = [...sources('lib', ['.ts']), ...sources('native', ['.cpp', '.h', '.cu', '.cuh'])];

test('every code thrown in lib/ and native/ is in ERROR_CODES', (t) => {
  const unknown = [];
  for (const f of files) for (const c of codesIn(f)) if (!Object.hasOwn(ERROR_CODES, c)) unknown.push(`${c} (${f})`);
  t.deepEqual(unknown, []);
  t.true(files.length > 50, `read ${files.length} files`);
});

test('every code in ERROR_CODES is used somewhere and documented in the README table', (t) => {
  // thrown by name ('ERR_X') or through the constants of lib/errors.ts (ERR_X)
  const mentions = (f) => [...readFileSync(path.join(root, f), 'utf8').matchAll(/\b(ERR_[A-Z_]+)\b/g)].map((m) => m[1]);
  const used = new Set(files.filter((f) => f !== path.join('lib', 'errors.ts')).flatMap(mentions));
  const readme = readFileSync(path.join(root, 'README.md'), 'utf8');
  for (const code of Object.keys(ERROR_CODES)) {
    t.true(used.has(code), `${code} is never thrown`);
    t.regex(readme, new RegExp(`^\\| \`${code}\` \\|`, 'm'), `${code} has no row in README.md`);
  }
});

test('an XpsrError built with a foreign code becomes ERR_INTERNAL', (t) => {
  t.is(new XpsrError('ERR_SOMETHING_ELSE', 'x').code, 'ERR_INTERNAL');
  t.is(new XpsrError('ERR_IO', 'x').code, 'ERR_IO');
});
