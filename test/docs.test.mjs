// Every reference to a document in the code and the docs resolves: each `docs/<name>.md` exists, and every
// `docs/architecture.md §N` (also `§N, §M` lists and `§A–§B` ranges after it) names a section of it.
import test from 'ava';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { root } from './helpers/fixtures.mjs';

function walk(dir, out = []) {
  for (const name of readdirSync(path.join(root, dir))) {
    const rel = path.join(dir, name);
    if (statSync(path.join(root, rel)).isDirectory()) walk(rel, out);
    else if (/\.(ts|mjs|js|cpp|h|cu|cuh|md|py|sh)$/.test(name)) out.push(rel);
  }
  return out;
}

const files = [...['lib', 'native', 'scripts', 'test', 'docs'].flatMap((d) => walk(d)), 'README.md'];
const architecture = readFileSync(path.join(root, 'docs', 'architecture.md'), 'utf8');
const sections = new Set([...architecture.matchAll(/^#{2,3} (\d+(?:bis)?(?:\.\d+)?)[. ]/gm)].map((m) => m[1]));

test('the architecture document has the numbered sections the code cites', (t) => {
  for (const s of ['1', '2.1', '2.5', '3.6', '3bis', '4.3', '5.2', '5bis', '6.3', '7.1', '7.9', '7.12', '8', '9', '10', '11'])
    t.true(sections.has(s), s);
});

test('every docs/*.md reference exists and every docs/architecture.md § names a section', (t) => {
  const bad = [];
  for (const f of files) {
    const text = readFileSync(path.join(root, f), 'utf8');
    for (const m of text.matchAll(/docs\/([\w.-]+\.md)((?:[ ,]*(?:and )?§[\w.]+(?:[–-]§?[\w.]+)?)*)/g)) {
      if (!existsSync(path.join(root, 'docs', m[1]))) bad.push(`${f}: docs/${m[1]} does not exist`);
      if (m[1] !== 'architecture.md') continue;
      for (const s of m[2].matchAll(/§?([\d]+(?:bis)?(?:\.\d+)?)/g))
        if (!sections.has(s[1])) bad.push(`${f}: docs/architecture.md §${s[1]} is not a section`);
    }
  }
  t.deepEqual(bad, []);
});
