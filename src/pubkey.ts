import bs58 from 'bs58';
import { LedgerError } from './errors';

/** A 32-byte public key: raw bytes (any Uint8Array view) or its base58 text. */
export type Pubkey = Uint8Array | string;

/**
 * The key's 32 bytes. A Uint8Array is returned as is (no copy): callers pass
 * it straight to the engine, which reads it before returning.
 */
export function keyBytes(pubkey: unknown): Uint8Array {
  if (pubkey instanceof Uint8Array) {
    if (pubkey.length === 32) return pubkey;
    throw new LedgerError('INVALID_PUBKEY', `pubkey must be 32 bytes, got ${pubkey.length}`);
  }
  if (typeof pubkey === 'string') {
    let bytes: Uint8Array;
    try {
      bytes = bs58.decode(pubkey);
    } catch {
      throw new LedgerError('INVALID_PUBKEY', 'pubkey string is not valid base58');
    }
    if (bytes.length !== 32) throw new LedgerError('INVALID_PUBKEY', `base58 pubkey decodes to ${bytes.length} bytes, not 32`);
    return bytes;
  }
  throw new LedgerError('INVALID_PUBKEY', `pubkey must be a 32-byte Uint8Array or a base58 string, got ${typeof pubkey}`);
}

export function toBase58(bytes: Uint8Array): string {
  return bs58.encode(bytes);
}
