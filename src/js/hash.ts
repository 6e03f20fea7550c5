/**
 * Key hashing, bit for bit the same as native/hash.hpp: murmur3-32 over the
 * key's eight little-endian 32-bit words, keyed by the ledger's seed. Shard
 * placement uses the high bits (multiply-shift), the index bucket a remix.
 *
 * The hash functions also leave the key's words in `K`, the engine's one key
 * register: lookups compare records against it word by word, so an operation
 * reads each key from the caller's buffer exactly once and allocates nothing.
 */
export const K = new Uint32Array(8);

function mix(h: number, k: number): number {
  k = Math.imul(k, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, 0x1b873593);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Hash of the 32-byte key at b[o..o+32) (any alignment); loads K. */
export function hashKeyBytes(b: Uint8Array, o: number, seed: number): number {
  const k = K;
  let h = seed | 0;
  for (let i = 0; i < 8; i++, o += 4) {
    const w = b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24);
    k[i] = w;
    h = mix(h, w);
  }
  return fmix32(h ^ 32);
}

/** Hash of the key held in words u[w..w+8); loads K. */
export function hashKeyWords(u: Uint32Array, w: number, seed: number): number {
  const k = K;
  let h = seed | 0;
  for (let i = 0; i < 8; i++) {
    const x = u[w + i];
    k[i] = x;
    h = mix(h, x | 0);
  }
  return fmix32(h ^ 32);
}

/** (hash * shards) >> 32, exact: the product stays below 2^44. */
export function shardOf(hash: number, shards: number): number {
  return Math.floor((hash * shards) / 4294967296);
}

export function bucketOf(hash: number, mask: number): number {
  return fmix32((hash ^ 0x9e3779b9) >>> 0) & mask;
}

/** Loads K with the key at b[o..o+32) (any alignment). */
export function loadKeyBytes(b: Uint8Array, o: number): void {
  const k = K;
  for (let i = 0; i < 8; i++, o += 4) k[i] = b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24);
}

/** Loads K with the key in words u[w..w+8). */
export function loadKeyWords(u: Uint32Array, w: number): void {
  const k = K;
  k[0] = u[w];
  k[1] = u[w + 1];
  k[2] = u[w + 2];
  k[3] = u[w + 3];
  k[4] = u[w + 4];
  k[5] = u[w + 5];
  k[6] = u[w + 6];
  k[7] = u[w + 7];
}
