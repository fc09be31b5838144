/**
 * The engine pool of the local executor: one XPSR instance per device, loaded in the background so the
 * server can answer /healthz (and a 503 /readyz) while weights load. A device runs one job at a time;
 * a device whose engine reports ERR_DEVICE_UNAVAILABLE is taken out of service (and /readyz turns 503).
 */
import { XPSR } from '../xpsr.js';
import type { LoadOptions } from '../options.js';
import type { DeviceStatus, JobError } from './jobs.js';

export class DeviceSlot {
  name: string;
  state: DeviceStatus['state'] = 'loading';
  xpsr: XPSR | undefined;
  busy = false;
  jobsRun = 0;
  error: JobError | null = null;
  /** False for engines handed in by the caller: the pool does not dispose them. */
  owned: boolean;

  constructor(name: string, owned: boolean) {
    this.name = name;
    this.owned = owned;
  }

  get usable(): boolean {
    return this.state === 'ready';
  }

  status(): DeviceStatus {
    return { name: this.name, state: this.state, busy: this.busy, jobsRun: this.jobsRun, error: this.error };
  }
}

export type PoolSource = { load: Omit<LoadOptions, 'device'>; devices: string[] } | { engines: XPSR[] };

export class DevicePool {
  readonly slots: DeviceSlot[];
  /** Settles when every device finished loading; rejects with the first load error. */
  readonly loaded: Promise<void>;
  #onChange: () => void = () => {};

  constructor(source: PoolSource) {
    if ('engines' in source) {
      this.slots = [];
      for (const x of source.engines) {
        const s = new DeviceSlot(this.#uniqueName(x.device), false);
        s.xpsr = x;
        s.state = 'ready';
        this.slots.push(s);
      }
      this.loaded = Promise.resolve();
      return;
    }
    this.slots = source.devices.map((d) => new DeviceSlot(d, true));
    const loads = this.slots.map(async (slot) => {
      try {
        slot.xpsr = await XPSR.load({ ...source.load, device: slot.name });
        slot.name = this.#uniqueName(slot.xpsr.device);
        slot.state = 'ready';
      } catch (e) {
        const err = e as { code?: string; message?: string };
        slot.state = 'failed';
        slot.error = { code: err.code ?? 'ERR_INTERNAL', message: err.message ?? String(e) };
        throw e;
      } finally {
        this.#onChange();
      }
    });
    this.loaded = Promise.all(loads).then(() => undefined);
    this.loaded.catch(() => undefined); // observed through `loaded` / slot states
  }

  /** 'cpu', then 'cpu#2', 'cpu#3'... when one device has several engines (names label metrics and statuses). */
  #uniqueName(device: string): string {
    const taken = new Set(this.slots.filter((s) => s.state !== 'loading').map((s) => s.name));
    if (!taken.has(device)) return device;
    let k = 2;
    while (taken.has(`${device}#${k}`)) k++;
    return `${device}#${k}`;
  }

  /** Called whenever a device becomes ready (the queue dispatches waiting jobs then). */
  onChange(fn: () => void): void {
    this.#onChange = fn;
  }

  get ready(): boolean {
    return this.slots.length > 0 && this.slots.every((s) => s.usable);
  }

  /** Takes a device out of service after an error that leaves it unusable. */
  markUnusable(slot: DeviceSlot, error: JobError): void {
    slot.state = 'unusable';
    slot.error = error;
  }

  async dispose(): Promise<void> {
    await this.loaded.catch(() => undefined);
    await Promise.all(
      this.slots.map(async (s) => {
        if (s.owned) await s.xpsr?.dispose();
      }),
    );
  }
}
