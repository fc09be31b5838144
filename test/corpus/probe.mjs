// Child process of the corpus: loads each model folder given on the command line through the API
// (XPSR.load), prints one JSON line per folder ({ dir, code, message } or { dir, loaded: true }), then
// proves the same process still serves: loads the good tiny model, upscales an image, prints
// { serving: true, width }. Run in a child so that a crash (pending engine config checks) is observed,
// not suffered.
import path from 'node:path';
import { XPSR } from '../../dist/lib/index.js';
import { fixtures, model } from '../helpers/fixtures.mjs';

const say = (o) => process.stdout.write(JSON.stringify(o) + '\n');
for (const dir of process.argv.slice(2)) {
  try {
    const x = await XPSR.load({ model: dir, device: 'cpu', onNotice: () => {} });
    say({ dir, loaded: true });
    await x.dispose();
  } catch (e) {
    say({ dir, code: e?.code ?? null, message: String(e?.message ?? e) });
  }
}
const x = await XPSR.load({ model, device: 'cpu', onNotice: () => {} });
const r = await x.upscale(path.join(fixtures, 'images', 'coffee_32x24.png'), { steps: 1, processSize: 64, seed: 1 });
say({ serving: true, width: r.width });
await x.dispose();
