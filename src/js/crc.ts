/**
 * CRC-32C (Castagnoli), slice-by-8, for the JS engine's hot paths. Same
 * polynomial and conventions as native/crc32c.cpp and src/format.ts: the
 * state starts at 0xFFFFFFFF and the result is its complement.
 *
 * Every checksummed structure of the ledger (account records, log records,
 * index pages, headers) starts at a 4-byte aligned offset in the buffers this
 * engine owns, so the inner loops read whole little-endian words through a
 * Uint32Array instead of assembling them from bytes.
 */
export const T = (() => {
  const t = new Int32Array(8 * 256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[i] = c;
  }
  for (let i = 0; i < 256; i++) {
    for (let s = 1; s < 8; s++) t[s * 256 + i] = (t[(s - 1) * 256 + i] >>> 8) ^ t[t[(s - 1) * 256 + i] & 0xff];
  }
  return t;
})();

/** Raw state update over `n` little-endian words of `u` starting at word `w`. */
export function crcWords(state: number, u: Uint32Array, w: number, n: number): number {
  const t = T;
  let c = state | 0;
  let i = w;
  const end = w + n;
  for (; i + 2 <= end; i += 2) {
    const lo = c ^ u[i];
    const hi = u[i + 1];
    c = t[1792 + (lo & 0xff)] ^ t[1536 + ((lo >>> 8) & 0xff)] ^ t[1280 + ((lo >>> 16) & 0xff)] ^ t[1024 + (lo >>> 24)] ^
      t[768 + (hi & 0xff)] ^ t[512 + ((hi >>> 8) & 0xff)] ^ t[256 + ((hi >>> 16) & 0xff)] ^ t[hi >>> 24];
  }
  if (i < end) {
    const x = c ^ u[i];
    c = t[768 + (x & 0xff)] ^ t[512 + ((x >>> 8) & 0xff)] ^ t[256 + ((x >>> 16) & 0xff)] ^ t[x >>> 24];
  }
  return c;
}

/** Raw state update over bytes [start, end) of any Uint8Array. */
export function crcBytes(state: number, b: Uint8Array, start: number, end: number): number {
  const t = T;
  let c = state | 0;
  let i = start;
  for (; i + 8 <= end; i += 8) {
    const lo = c ^ (b[i] | (b[i + 1] << 8) | (b[i + 2] << 16) | (b[i + 3] << 24));
    c = t[1792 + (lo & 0xff)] ^ t[1536 + ((lo >>> 8) & 0xff)] ^ t[1280 + ((lo >>> 16) & 0xff)] ^ t[1024 + (lo >>> 24)] ^
      t[768 + b[i + 4]] ^ t[512 + b[i + 5]] ^ t[256 + b[i + 6]] ^ t[b[i + 7]];
  }
  for (; i < end; i++) c = (c >>> 8) ^ t[(c ^ b[i]) & 0xff];
  return c;
}

/** CRC-32C of `n` words at word `w`. */
export function crc32cWords(u: Uint32Array, w: number, n: number): number {
  return ~crcWords(0xffffffff, u, w, n) >>> 0;
}

/** CRC-32C of bytes [start, end). */
export function crc32cBytes(b: Uint8Array, start: number, end: number): number {
  return ~crcBytes(0xffffffff, b, start, end) >>> 0;
}

/**
 * Re-sealing an account record whose balance and LSN (bytes 32..48 of the 124 it checksums)
 * changed, without reading the other 108. CRC is linear: for messages of equal length,
 * crc(new) = crc(old) ^ raw(0, old ^ new), and the difference is zero but for those 16 bytes, so
 * raw(0, old ^ new) is the raw CRC of the 16 changed bytes carried over the 76 zero bytes after
 * them (a linear map of the 32-bit state: four table lookups). About a sixth of a full CRC.
 */
/** Tables of the linear map "carry a raw CRC state over n zero bytes", one per byte of the state. */
function zeroAdvance(n: number): Int32Array {
  const step = (c: number): number => (c >>> 8) ^ T[c & 0xff]; // one zero byte
  const z = new Int32Array(4 * 256);
  for (let p = 0; p < 4; p++) {
    for (let v = 0; v < 256; v++) {
      let c = v << (8 * p);
      for (let i = 0; i < n; i++) c = step(c);
      z[p * 256 + v] = c;
    }
  }
  return z;
}
const Z = zeroAdvance(124 - 48);
const Z124 = zeroAdvance(124);

/**
 * The raw state after feeding, from `state`, a 124-byte account record whose CRC-32C is `crc`
 * (without reading it): raw(s, m) = A(s ^ ~0) ^ ~crc(m), where A carries a state over 124 zero
 * bytes. Log records embed account images: their CRC reuses the image's.
 */
export function crcOverRecord(state: number, crc: number): number {
  const z = Z124;
  const x = state ^ 0xffffffff;
  return z[x & 0xff] ^ z[256 + ((x >>> 8) & 0xff)] ^ z[512 + ((x >>> 16) & 0xff)] ^ z[768 + (x >>> 24)] ^ ~crc;
}

/** The XOR that turns the CRC of a record into that of the record with words 8..11 changed by d0..d3. */
export function recordCrcDelta(d0: number, d1: number, d2: number, d3: number): number {
  const t = T;
  let lo = d0;
  let hi = d1;
  let c = t[1792 + (lo & 0xff)] ^ t[1536 + ((lo >>> 8) & 0xff)] ^ t[1280 + ((lo >>> 16) & 0xff)] ^ t[1024 + (lo >>> 24)] ^
    t[768 + (hi & 0xff)] ^ t[512 + ((hi >>> 8) & 0xff)] ^ t[256 + ((hi >>> 16) & 0xff)] ^ t[hi >>> 24];
  lo = c ^ d2;
  hi = d3;
  c = t[1792 + (lo & 0xff)] ^ t[1536 + ((lo >>> 8) & 0xff)] ^ t[1280 + ((lo >>> 16) & 0xff)] ^ t[1024 + (lo >>> 24)] ^
    t[768 + (hi & 0xff)] ^ t[512 + ((hi >>> 8) & 0xff)] ^ t[256 + ((hi >>> 16) & 0xff)] ^ t[hi >>> 24];
  const z = Z;
  return z[c & 0xff] ^ z[256 + ((c >>> 8) & 0xff)] ^ z[512 + ((c >>> 16) & 0xff)] ^ z[768 + (c >>> 24)];
}
