// The package's one native-addon loader (lib/addon-loader.ts), and the captioner addon loaded by several
// Node.js environments at once (worker_threads): per-environment state, same answers, no cross-talk.
import fs from 'node:fs';
import path from 'node:path';
import v8 from 'node:v8';
import { Worker } from 'node:worker_threads';

import test from 'ava';

import { addonPackageRoot, loadAddon } from '../dist/lib/addon-loader.js';
import { LlavaCaptioner } from '../dist/lib/captioners/llava.js';
import { loadNative } from '../dist/lib/native.js';
import { captionerDisabled, HIGH, LOW, makeModels, tempDir, writeTestPng } from './helpers/gguf-captioner.mjs';

// workers created after this get a `gc` global (the GC phase of the worker test needs it)
v8.setFlagsFromString('--expose-gc');

const tmp = tempDir('xpsr-addon-');
test.after.always(() => tmp.cleanup());

test('loadAddon tries every place in order and lists each with its reason', (t) => {
  const dir = path.join(tmp.dir, 'places');
  fs.mkdirSync(path.join(dir, 'envdir'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'refused'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'refused', 'x.node'), 'never loaded');
  const broken = path.join(dir, 'broken.node');
  fs.writeFileSync(broken, 'not a shared object');
  const checked = [];
  const spec = {
    name: 'test addon',
    file: 'x.node',
    envFile: 'T_ADDON_FILE',
    envDir: 'T_ADDON_DIR',
    folders: [path.relative(addonPackageRoot, path.join(dir, 'refused')), 'no-such-folder'],
    prebuiltPackage: '@xpsr-native/no-such-prebuilt',
    check: (file) => {
      checked.push(file);
      return 'built for another version';
    },
    remedies: ['rebuild it;', 'or set T_ADDON_FILE.'],
  };
  const e = t.throws(() => loadAddon(spec, { T_ADDON_FILE: broken, T_ADDON_DIR: path.join(dir, 'envdir') }));
  t.is(e.name, 'XpsrError');
  t.is(e.code, 'ERR_NATIVE_MISSING');
  t.deepEqual(
    e.details.tried.map((x) => x.where),
    [
      `T_ADDON_FILE=${broken}`,
      `T_ADDON_DIR=${path.join(dir, 'envdir')}`,
      path.join(dir, 'refused', 'x.node'),
      path.join(addonPackageRoot, 'no-such-folder', 'x.node'),
      'package @xpsr-native/no-such-prebuilt',
    ],
  );
  const reasons = e.details.tried.map((x) => x.reason);
  t.is(reasons[0], 'built for another version', 'the check runs before loading');
  t.regex(reasons[1], /envdir\/x\.node not found/);
  t.is(reasons[2], 'built for another version');
  t.is(reasons[3], 'not found');
  t.is(reasons[4], 'not installed');
  t.deepEqual(checked, [broken, path.join(dir, 'refused', 'x.node')]);
  t.regex(e.message, /^The test addon could not be loaded \(.*\)\. Tried:\n {2}- T_ADDON_FILE=/);
  t.regex(e.message, /Possible solutions:\n {2}- rebuild it;\n {2}- or set T_ADDON_FILE\.$/);
  // without the check the broken file is tried and its load error reported
  const e2 = t.throws(() => loadAddon({ ...spec, check: undefined, folders: [] }, { T_ADDON_FILE: broken }));
  t.regex(e2.details.tried[0].reason, /invalid ELF header|not a valid|too short/i);
});

test('loadAddon: an override wins over the build folders; both addons load through it', (t) => {
  const engine = loadNative();
  t.is(typeof engine.systemInfo, 'function');
  const real = path.join(addonPackageRoot, 'build', 'Release', 'xpsr.node');
  const spec = { name: 'engine', file: 'xpsr.node', envFile: 'T_ENGINE', folders: ['build/Release'], remedies: [] };
  t.is(loadAddon(spec, {}).file, real);
  const copyDir = path.join(tmp.dir, 'copy');
  fs.mkdirSync(copyDir, { recursive: true });
  const copy = path.join(copyDir, 'xpsr.node');
  fs.copyFileSync(real, copy);
  const viaEnv = loadAddon(spec, { T_ENGINE: copy });
  t.is(viaEnv.file, copy);
  t.is(typeof viaEnv.addon.systemInfo, 'function');
  t.is(loadAddon(spec, { T_ENGINE: copy }).addon, viaEnv.addon, 'loaded once');
});

const llavaTest = captionerDisabled ? test.skip : test;

llavaTest('the captioner addon in two worker_threads at once: per-environment state, the same captions', async (t) => {
  const m = makeModels(path.join(tmp.dir, 'm'), 'tiny');
  const image = writeTestPng(path.join(tmp.dir, 'img', 'w.png'), 5);
  const instructions = [HIGH, LOW];
  const barrier = new Int32Array(new SharedArrayBuffer(4));
  const dist = new URL('../dist/lib', import.meta.url).href;
  const start = () => {
    const w = new Worker(new URL('./helpers/gguf-captioner-worker.mjs', import.meta.url), {
      workerData: { ...m, image, instructions, barrier, workers: 2, dist },
    });
    const messages = [];
    const waiters = [];
    w.on('message', (msg) => {
      const r = waiters.shift();
      if (r) r(msg);
      else messages.push(msg);
    });
    const failed = new Promise((_, reject) => w.on('error', reject));
    const exited = new Promise((resolve) => w.on('exit', resolve));
    const next = () => Promise.race([failed, messages.length ? Promise.resolve(messages.shift()) : new Promise((r) => waiters.push(r))]);
    return { w, next, exited, failed };
  };
  const a = start();
  const b = start();
  const [ra, rb] = await Promise.all([a.next(), b.next()]);
  // each environment counts only its own model, although both were loaded at the same time
  t.deepEqual(ra.whileBothLoaded, { objects: 1, loaded: 1 });
  t.deepEqual(rb.whileBothLoaded, { objects: 1, loaded: 1 });
  t.deepEqual(ra.afterDispose.loaded, 0);
  t.deepEqual(rb.afterDispose.loaded, 0);
  // the same answers as on the main thread
  const c = await LlavaCaptioner.create({ model: m.model, mmproj: m.mmproj, maxTokens: 10, threads: 1 });
  try {
    const main = await c.caption(image, instructions);
    t.deepEqual(ra.captions, main);
    t.deepEqual(rb.captions, main);
  } finally {
    await c.dispose();
  }
  // worker a shuts down; worker b's environment is not affected: its finalizers still free what it drops
  a.w.postMessage('done');
  t.is(await a.exited, 0);
  b.w.postMessage('gc');
  const gc = await b.next();
  t.is(gc.loaded.loaded, 1);
  t.is(gc.afterGc.loaded, 0, 'a dropped model is freed by its finalizer');
  t.is(gc.afterGc.objects, gc.loaded.objects - 1);
  t.is(await b.exited, 0);
});
