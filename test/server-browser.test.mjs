// The web page in a real headless Chromium (Debian's /usr/bin/chromium driven by playwright-core) on
// the tiny model: pick an image, run, watch the progress bar fed by the event stream, get the before /
// after comparison, move the slider, download the result, cancel a long run. A screenshot is kept in test-output/.
// Skips with the reason when no Chromium is installed (.ci/run installs it).
import test from 'ava';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { XPSR, createServer } from '../dist/lib/index.js';
import { fixtures, model, root } from './helpers/fixtures.mjs';

const CHROMIUM = process.env.XPSR_CHROMIUM ?? '/usr/bin/chromium';
const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const outDir = path.join(root, 'test-output');

const run = existsSync(CHROMIUM) ? test : test.skip;
if (!existsSync(CHROMIUM)) console.warn(`server-browser: skipped, no Chromium at ${CHROMIUM} (apt-get install chromium, or set XPSR_CHROMIUM)`);

run('web page: upload, live progress from the event stream, comparison slider, download, cancel', async (t) => {
  t.timeout(180_000);
  const { chromium } = await import('playwright-core');
  const engine = await XPSR.load({ model, device: 'cpu', threads: 1, onNotice: () => {} });
  const server = await createServer({ engines: [engine] });
  const url = await server.listen({ port: 0 });
  const profile = mkdtempSync(path.join(tmpdir(), 'xpsr-chromium-'));
  // A persistent context on a fresh, empty profile directory (Playwright passes it as --user-data-dir).
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: FLAGS,
    acceptDownloads: true,
    viewport: { width: 1100, height: 1000 },
  });
  t.teardown(async () => {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
    await server.close(0);
    await engine.dispose();
  });
  const page = context.pages()[0] ?? (await context.newPage());
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));

  await page.goto(`${url}/`);
  await page.waitForFunction(() => document.getElementById('server-status').textContent.startsWith('ready'));
  t.regex(await page.textContent('#server-status'), /ready · cpu/);

  const input = path.join(fixtures, 'images', 'coffee_32x24.png');
  await page.setInputFiles('#file', input);
  await page.waitForFunction(() => !document.getElementById('run').disabled);
  t.regex(await page.textContent('#drop-text'), /coffee_32x24\.png · 32×24/);
  await page.fill('#steps', '3');
  await page.fill('#seed', '11');
  await page.fill('#process-size', '64');
  await page.fill('#prompt-high', 'a cup of coffee');

  // Record every value the progress bar takes while the job runs.
  await page.evaluate(() => {
    window.progressSeen = [];
    const bar = document.getElementById('progress');
    new MutationObserver(() => window.progressSeen.push(Number(bar.value))).observe(bar, { attributes: true, attributeFilter: ['value'] });
  });
  await page.click('#run');
  await page.waitForSelector('#result:not([hidden])', { timeout: 120_000 });
  const seen = await page.evaluate(() => window.progressSeen);
  t.true(
    seen.some((v) => v > 0 && v < 1),
    `intermediate progress shown (${seen.join(', ')})`,
  );
  t.is(seen.at(-1), 1);
  t.is(await page.textContent('#progress-text'), 'done');
  t.regex(await page.textContent('#result-meta'), /^128×96 · seed 11 · /);

  // Both sides of the comparison have the output size: the bicubic canvas and the XPSR image.
  const sizes = await page.evaluate(() => {
    const before = document.getElementById('before');
    const after = document.getElementById('after');
    return { before: [before.width, before.height], after: [after.naturalWidth, after.naturalHeight] };
  });
  t.deepEqual(sizes, { before: [128, 96], after: [128, 96] });
  // The bicubic side is a real upscale of the input (not blank): it has the input's mean colour.
  const beforeMean = await page.evaluate(() => {
    const c = document.getElementById('before');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let s = 0;
    for (let i = 0; i < d.length; i += 4) s += d[i] + d[i + 1] + d[i + 2];
    return s / (d.length / 4) / 3;
  });
  const { channels } = await sharp(input).stats();
  const inputMean = (channels[0].mean + channels[1].mean + channels[2].mean) / 3;
  t.true(Math.abs(beforeMean - inputMean) < 3, `bicubic mean ${beforeMean.toFixed(1)} vs input ${inputMean.toFixed(1)}`);

  // The slider moves the divide between the two.
  await page.locator('#compare').scrollIntoViewIfNeeded();
  const box = await page.locator('#compare').boundingBox();
  await page.mouse.click(box.x + box.width * 0.25, box.y + Math.min(box.height / 2, 200));
  const clip = await page.evaluate(() => [document.getElementById('after').style.clipPath, document.getElementById('divider').style.left]);
  const pos = Number(/inset\(0(?:px)? 0(?:px)? 0(?:px)? ([\d.]+)%\)/.exec(clip[0])?.[1]);
  t.true(Math.abs(pos - 25) < 3, `clip at ${clip[0]}`);
  t.is(clip[1], `${pos}%`);

  mkdirSync(outDir, { recursive: true });
  const shot = path.join(outDir, 'server-page.png');
  await page.screenshot({ path: shot, fullPage: true });
  t.true((await sharp(shot).metadata()).width >= 1000);

  // Download gives the same PNG the API serves for the job.
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download')]);
  t.is(download.suggestedFilename(), 'coffee_32x24-xpsr-x4.png');
  const file = path.join(outDir, 'server-download.png');
  await download.saveAs(file);
  const meta = await sharp(file).metadata();
  t.is(meta.format, 'png');
  t.is(meta.width, 128);
  t.is(meta.height, 96);
  const direct = await engine.upscale(input, {
    steps: 3,
    seed: 11,
    processSize: 64,
    guidanceScale: 4.5,
    scale: 4,
    prompts: { high: 'a cup of coffee', low: '' },
  });
  const downloaded = await sharp(readFileSync(file)).raw().toBuffer();
  t.true(downloaded.equals(direct.image), 'the download holds the pixels of XPSR.upscale with the same settings');

  // Cancel: a long run stops when the Cancel button is pressed.
  await page.fill('#steps', '500');
  await page.click('#run');
  await page.waitForFunction(() => document.getElementById('progress-text').textContent.startsWith('denoising'), null, { timeout: 60_000 });
  await page.click('#cancel');
  await page.waitForFunction(() => document.getElementById('progress-text').textContent === 'cancelled', null, { timeout: 60_000 });
  t.false(await page.isDisabled('#run'), 'ready for the next run');
  t.is(await page.isHidden('#error'), true);
  t.deepEqual(pageErrors, []);
});
