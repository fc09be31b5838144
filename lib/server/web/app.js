// The xpsr serve web page: pick an image, POST /v1/jobs, follow /v1/jobs/{id}/events for the progress
// bar, fetch the result and show it against a bicubic upscale of the input with a comparison slider.
// Plain browser JavaScript, no build step. The event stream is read with fetch() (not EventSource) so
// the API key can travel in the Authorization header.
'use strict';

const $ = (id) => document.getElementById(id);
const ui = {
  form: $('form'), drop: $('drop'), file: $('file'), thumb: $('thumb'), dropText: $('drop-text'),
  captionItRow: $('caption-it-row'), captionIt: $('caption-it'), high: $('prompt-high'), low: $('prompt-low'),
  steps: $('steps'), seed: $('seed'), guidance: $('guidance'), scale: $('scale'), processSize: $('process-size'),
  apiKeyRow: $('api-key-row'), apiKey: $('api-key'), run: $('run'), cancel: $('cancel'),
  progress: $('progress'), progressText: $('progress-text'), error: $('error'), status: $('server-status'),
  result: $('result'), before: $('before'), after: $('after'), divider: $('divider'), slider: $('slider'),
  meta: $('result-meta'), download: $('download'),
};

let picked = null;      // { file, bitmap }
let current = null;     // { id, abort: AbortController }
let resultUrl = null;

function headers() {
  const key = ui.apiKey.value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

function showError(message) {
  ui.error.textContent = message;
  ui.error.hidden = !message;
}

function setProgress(fraction, text) {
  ui.progress.value = Math.max(0, Math.min(1, fraction));
  ui.progressText.textContent = text;
}

async function apiError(res) {
  try {
    const body = await res.json();
    return `${body.message} [${body.code}]`;
  } catch {
    return `HTTP ${res.status}`;
  }
}

// --- server facts -------------------------------------------------------------------------------

async function loadInfo() {
  try {
    const res = await fetch('v1/info', { headers: headers() });
    if (res.status === 401) {
      ui.apiKeyRow.hidden = false;
      ui.status.textContent = 'API key needed';
      ui.status.className = 'badge';
      return;
    }
    const info = await res.json();
    ui.apiKeyRow.hidden = !info.auth;
    ui.captionItRow.hidden = !info.captioner;
    const devices = info.devices.map((d) => d.name).join(', ');
    ui.status.textContent = info.ready ? `ready · ${devices}` : 'loading weights…';
    ui.status.className = `badge ${info.ready ? 'ready' : ''}`;
    if (!info.ready) setTimeout(loadInfo, 2000);
  } catch {
    ui.status.textContent = 'server unreachable';
    ui.status.className = 'badge down';
    setTimeout(loadInfo, 5000);
  }
}

// --- picking an image ---------------------------------------------------------------------------

async function pick(file) {
  if (!file) return;
  showError('');
  try {
    const bitmap = await createImageBitmap(file);
    picked = { file, bitmap };
    ui.thumb.src = URL.createObjectURL(file);
    ui.thumb.hidden = false;
    ui.dropText.textContent = `${file.name} · ${bitmap.width}×${bitmap.height}`;
    ui.run.disabled = false;
    setProgress(0, 'Ready to upscale.');
  } catch {
    showError(`${file.name} is not an image this browser can read`);
  }
}

ui.file.addEventListener('change', () => pick(ui.file.files[0]));
for (const type of ['dragenter', 'dragover']) ui.drop.addEventListener(type, (e) => {
  e.preventDefault();
  ui.drop.classList.add('over');
});
for (const type of ['dragleave', 'drop']) ui.drop.addEventListener(type, () => ui.drop.classList.remove('over'));
ui.drop.addEventListener('drop', (e) => {
  e.preventDefault();
  pick(e.dataTransfer.files[0]);
});
ui.apiKey.addEventListener('change', loadInfo);
ui.captionIt.addEventListener('change', () => {
  ui.high.disabled = ui.low.disabled = ui.captionIt.checked;
});

// --- running a job ------------------------------------------------------------------------------

function describe(status) {
  if (status.state === 'queued') return `queued · position ${status.position}`;
  if (status.stage === 'denoise') return `denoising · step ${status.step}/${status.total}`;
  if (status.stage) return `${status.stage}…`;
  return status.state;
}

/** Reads the server-sent events of a job until its final event. */
async function follow(id, signal, onEvent) {
  const res = await fetch(`v1/jobs/${id}/events`, { headers: headers(), signal });
  if (!res.ok) throw new Error(await apiError(res));
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = 'message';
      let data = '';
      for (const line of block.split('\n')) {
        if (line.startsWith('event: ')) event = line.slice(7);
        else if (line.startsWith('data: ')) data += line.slice(6);
      }
      if (data) onEvent(event, JSON.parse(data));
    }
  }
}

async function run(e) {
  e.preventDefault();
  if (!picked || current) return;
  showError('');
  ui.result.hidden = true;
  const body = new FormData();
  const fields = {
    steps: ui.steps.value, guidanceScale: ui.guidance.value, scale: ui.scale.value, processSize: ui.processSize.value, format: 'png',
  };
  if (ui.seed.value !== '') fields.seed = ui.seed.value;
  if (!ui.captionIt.checked) {
    fields['prompts.high'] = ui.high.value;
    fields['prompts.low'] = ui.low.value;
  }
  for (const [k, v] of Object.entries(fields)) body.append(k, v);
  body.append('image', picked.file, picked.file.name);

  const abort = new AbortController();
  ui.run.disabled = true;
  setProgress(0, 'uploading…');
  try {
    const res = await fetch('v1/jobs', { method: 'POST', body, headers: headers(), signal: abort.signal });
    if (!res.ok) throw new Error(await apiError(res));
    const job = await res.json();
    current = { id: job.id, abort };
    ui.cancel.disabled = false;
    let final = null;
    await follow(job.id, abort.signal, (event, status) => {
      setProgress(status.progress, describe(status));
      if (event === 'done' || event === 'failed' || event === 'cancelled') final = status;
    });
    if (!final) throw new Error('the event stream ended early');
    if (final.state === 'done') await showResult(final);
    else if (final.state === 'cancelled') setProgress(0, 'cancelled');
    else throw new Error(`${final.error.message} [${final.error.code}]`);
  } catch (err) {
    if (err.name !== 'AbortError') showError(err.message);
    setProgress(0, 'stopped');
  } finally {
    current = null;
    ui.cancel.disabled = true;
    ui.run.disabled = !picked;
  }
}

ui.form.addEventListener('submit', run);
ui.cancel.addEventListener('click', async () => {
  if (!current) return;
  ui.cancel.disabled = true;
  const res = await fetch(`v1/jobs/${current.id}`, { method: 'DELETE', headers: headers() });
  if (!res.ok && res.status !== 409) showError(await apiError(res));
});

// --- the result and the comparison --------------------------------------------------------------

async function showResult(status) {
  const res = await fetch(`v1/jobs/${status.id}/result`, { headers: headers() });
  if (!res.ok) throw new Error(await apiError(res));
  const blob = await res.blob();
  if (resultUrl) URL.revokeObjectURL(resultUrl);
  resultUrl = URL.createObjectURL(blob);
  const { width, height } = status.result;
  drawBicubic(picked.bitmap, width, height);
  await new Promise((resolve, reject) => {
    ui.after.onload = resolve;
    ui.after.onerror = () => reject(new Error('the result is not a displayable image'));
    ui.after.src = resultUrl;
  });
  const stem = picked.file.name.replace(/\.[^.]*$/, '') || 'image';
  ui.download.href = resultUrl;
  ui.download.download = `${stem}-xpsr-x${ui.scale.value}.png`;
  ui.meta.textContent = `${width}×${height} · seed ${status.result.seed} · ${(status.result.timingsMs.total / 1000).toFixed(1)} s`;
  ui.result.hidden = false;
  ui.slider.value = 50;
  placeDivider();
  setProgress(1, 'done');
}

function placeDivider() {
  const p = Number(ui.slider.value);
  ui.after.style.clipPath = `inset(0 0 0 ${p}%)`;
  ui.divider.style.left = `${p}%`;
}
ui.slider.addEventListener('input', placeDivider);

/** Bicubic (Keys, a = -0.5) resize of the input to the output size, drawn on the "before" canvas. */
function drawBicubic(bitmap, W, H) {
  const src = new OffscreenCanvas(bitmap.width, bitmap.height).getContext('2d');
  src.drawImage(bitmap, 0, 0);
  const { data: s, width: w, height: h } = src.getImageData(0, 0, bitmap.width, bitmap.height);
  const weights = (outSize, inSize) => {
    const scale = inSize / outSize;
    const taps = [];
    for (let o = 0; o < outSize; o++) {
      const x = (o + 0.5) * scale - 0.5;
      const x0 = Math.floor(x);
      const t = [];
      for (let k = -1; k <= 2; k++) {
        const d = Math.abs(x - (x0 + k));
        const wgt = d <= 1 ? 1.5 * d ** 3 - 2.5 * d ** 2 + 1 : d < 2 ? -0.5 * d ** 3 + 2.5 * d ** 2 - 4 * d + 2 : 0;
        t.push([Math.min(inSize - 1, Math.max(0, x0 + k)), wgt]);
      }
      taps.push(t);
    }
    return taps;
  };
  const wx = weights(W, w);
  const wy = weights(H, h);
  const mid = new Float32Array(W * h * 4); // horizontal pass
  for (let y = 0; y < h; y++)
    for (let x = 0; x < W; x++)
      for (let c = 0; c < 4; c++) {
        let v = 0;
        for (const [i, k] of wx[x]) v += k * s[(y * w + i) * 4 + c];
        mid[(y * W + x) * 4 + c] = v;
      }
  const out = new ImageData(W, H); // vertical pass
  for (let y = 0; y < H; y++)
    for (let x = 0; x < W; x++)
      for (let c = 0; c < 4; c++) {
        let v = 0;
        for (const [j, k] of wy[y]) v += k * mid[(j * W + x) * 4 + c];
        out.data[(y * W + x) * 4 + c] = v; // ImageData clamps and rounds
      }
  ui.before.width = W;
  ui.before.height = H;
  ui.before.getContext('2d').putImageData(out, 0, 0);
}

loadInfo();
