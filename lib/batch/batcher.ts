/**
 * The call queue of one XPSR instance, with dynamic batching. Calls are prepared one at a time, in
 * arrival order (decode, preprocess, captions: whatever must happen before the batch key is known), then
 * grouped by key (same processed size and shared settings) into batches that run one at a time on the
 * engine. A batch starts when it is full (`limit`), or when no more calls are waiting to be prepared and
 * the first call has waited `delayMs`; calls arriving meanwhile join it. With limit 1 every call runs
 * alone, in order: the plain call queue.
 *
 * Each call keeps its own signal: while it waits (to be prepared, or in a forming batch) an abort rejects
 * it at once and it never runs; once its batch runs, the runner drops it (lib/pipeline/core.ts).
 */
import { XpsrError } from '../errors.js';

/** A prepared call: what it runs with, and which calls it may share a batch with. */
export interface Prepared<P> {
  /** Calls with equal keys can run in one batch. */
  key: string;
  /** The largest batch this call may run in (1 = alone). */
  limit: number;
  /** How long this call, at the head of the queue, waits for others to fill its batch (ms). */
  delayMs: number;
  value: P;
}

/** One call of a running batch: its prepared value and how to settle its promise. */
export interface BatchMember<P, R> {
  value: P;
  signal?: AbortSignal;
  resolve(result: R): void;
  reject(error: unknown): void;
}

/** Runs one batch; it must settle every member (an unsettled one is rejected with ERR_INTERNAL). */
export type BatchRunner<P, R> = (members: BatchMember<P, R>[]) => Promise<void>;

interface Entry<P, R> {
  prepare: () => Promise<Prepared<P>>;
  signal?: AbortSignal;
  prepared?: Prepared<P>;
  readyAt: number;
  settled: boolean;
  resolve(r: R): void;
  reject(e: unknown): void;
  offAbort(): void;
}

export interface BatcherStats {
  /** Calls waiting to be prepared. */
  pending: number;
  /** Prepared calls waiting for their batch. */
  ready: number;
  /** Calls in the running batch. */
  running: number;
  /** Batches run so far, and the calls they held. */
  batches: number;
  calls: number;
}

export class Batcher<P, R> {
  readonly #run: BatchRunner<P, R>;
  readonly #pending: Entry<P, R>[] = [];
  readonly #ready: Entry<P, R>[] = [];
  #running = 0;
  #batches = 0;
  #calls = 0;
  #loop: Promise<void> | null = null;
  /** Wakes the loop while it waits for a batch to fill. */
  #wake: (() => void) | null = null;

  constructor(run: BatchRunner<P, R>) {
    this.#run = run;
  }

  /** Queues a call; `prepare` runs when the call's turn to be prepared comes. */
  submit(prepare: () => Promise<Prepared<P>>, signal?: AbortSignal): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      const entry: Entry<P, R> = {
        prepare,
        signal,
        readyAt: 0,
        settled: false,
        resolve: (r) => {
          if (!entry.settled) (entry.settled = true), entry.offAbort(), resolve(r);
        },
        reject: (e) => {
          if (!entry.settled) (entry.settled = true), entry.offAbort(), reject(e);
        },
        offAbort: () => {},
      };
      if (signal?.aborted) return entry.reject(new XpsrError('ERR_CANCELLED', 'cancelled'));
      if (signal) {
        const onAbort = () => {
          // only while waiting: a call being prepared or run stops through its own signal
          const list = this.#pending.includes(entry) ? this.#pending : this.#ready.includes(entry) ? this.#ready : null;
          if (!list) return;
          list.splice(list.indexOf(entry), 1);
          entry.reject(new XpsrError('ERR_CANCELLED', 'cancelled while waiting for the previous call'));
          this.#wake?.();
        };
        signal.addEventListener('abort', onAbort, { once: true });
        entry.offAbort = () => signal.removeEventListener('abort', onAbort);
      }
      this.#pending.push(entry);
      this.#wake?.();
      this.#start();
    });
  }

  /** Starts the loop unless it runs; a call queued while the loop was ending starts it again. */
  #start(): void {
    if (this.#loop) return;
    this.#loop = this.#drain().finally(() => {
      this.#loop = null;
      if (this.#pending.length > 0 || this.#ready.length > 0) this.#start();
    });
  }

  /** Settles when every call submitted so far has settled. */
  async idle(): Promise<void> {
    while (this.#loop) await this.#loop;
  }

  stats(): BatcherStats {
    return { pending: this.#pending.length, ready: this.#ready.length, running: this.#running, batches: this.#batches, calls: this.#calls };
  }

  async #drain(): Promise<void> {
    while (this.#pending.length > 0 || this.#ready.length > 0) {
      if (this.#ready.length === 0) {
        await this.#prepareNext();
        continue;
      }
      const batch = await this.#form();
      for (const e of batch) this.#ready.splice(this.#ready.indexOf(e), 1);
      if (batch.length === 0) continue; // its calls were cancelled while it was forming
      await this.#runBatch(batch);
    }
  }

  /** Prepares the oldest pending call; a failure rejects that call only. */
  async #prepareNext(): Promise<void> {
    const entry = this.#pending.shift();
    if (!entry) return;
    try {
      const prepared = await entry.prepare();
      if (entry.signal?.aborted) throw new XpsrError('ERR_CANCELLED', 'cancelled');
      entry.prepared = prepared;
      entry.readyAt = performance.now();
      this.#ready.push(entry);
    } catch (e) {
      entry.reject(e);
    }
  }

  /**
   * The next batch: the oldest prepared call and the later ones with its key, while the batch is below
   * every member's limit. Prepares further calls (a bounded look-ahead) and waits up to the head's delay
   * to fill it.
   */
  async #form(): Promise<Entry<P, R>[]> {
    for (;;) {
      const head = this.#ready[0];
      if (!head) return [];
      const members = [head];
      let limit = head.prepared!.limit;
      for (const e of this.#ready.slice(1)) {
        if (members.length >= limit) break;
        if (e.prepared!.key !== head.prepared!.key || e.prepared!.limit <= members.length) continue;
        members.push(e);
        limit = Math.min(limit, e.prepared!.limit);
      }
      if (members.length >= limit) return members;
      if (this.#pending.length > 0 && this.#ready.length < Math.max(4, 2 * limit)) {
        await this.#prepareNext();
        continue;
      }
      const wait = head.readyAt + head.prepared!.delayMs - performance.now();
      if (this.#pending.length > 0 || wait <= 0) return members;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, wait);
        function done() {
          clearTimeout(timer);
          resolve();
        }
        this.#wake = done;
      });
      this.#wake = null;
    }
  }

  async #runBatch(batch: Entry<P, R>[]): Promise<void> {
    this.#running = batch.length;
    this.#batches++;
    this.#calls += batch.length;
    try {
      await this.#run(batch.map((e) => ({ value: e.prepared!.value, signal: e.signal, resolve: e.resolve, reject: e.reject })));
    } catch (e) {
      for (const entry of batch) entry.reject(e);
    } finally {
      this.#running = 0;
      for (const entry of batch) entry.reject(new XpsrError('ERR_INTERNAL', 'the batch ended without a result for this call'));
    }
  }
}
