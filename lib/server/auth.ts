/**
 * Optional API keys: `Authorization: Bearer <key>`. The presented key is compared with every configured
 * key through fixed-length SHA-256 digests and timingSafeEqual, without stopping early, so the time
 * taken says nothing about which key or how much of it matched. A refusal never says what was wrong.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { XpsrError } from '../errors.js';
import { ERR_UNAUTHORIZED } from './errors.js';

const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();

export class ApiKeys {
  readonly #digests: Buffer[];

  constructor(keys: readonly string[]) {
    for (const k of keys)
      if (typeof k !== 'string' || k.length < 8) throw new XpsrError('ERR_INVALID_OPTION', 'API keys must be strings of at least 8 characters');
    this.#digests = keys.map(digest);
  }

  get enabled(): boolean {
    return this.#digests.length > 0;
  }

  /** True when keys are off, or the Authorization header carries one of them. */
  allows(authorization: string | undefined): boolean {
    if (!this.enabled) return true;
    const m = /^Bearer[ ]+(\S+)\s*$/i.exec(authorization ?? '');
    const presented = digest(m ? m[1] : '');
    let ok = false;
    for (const d of this.#digests) ok = timingSafeEqual(d, presented) || ok;
    return ok && m !== null;
  }

  check(authorization: string | undefined): void {
    if (!this.allows(authorization)) throw new XpsrError(ERR_UNAUTHORIZED, 'missing or invalid API key (send Authorization: Bearer <key>)');
  }
}
