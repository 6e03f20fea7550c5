// The JS engine's CRC shortcuts against the plain CRC-32C of src/format.ts: re-sealing a record from
// the change of its balance and LSN, and a log record's CRC that reuses the embedded image's.
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { crc32c } from '../../dist/format.js';
import { makeRng } from './workload.mjs';

const require = createRequire(import.meta.url);
const crc = require('../../dist/js/crc.js');

function words(rng: ReturnType<typeof makeRng>, n: number): Uint32Array {
  const u = new Uint32Array(n);
  for (let i = 0; i < n; i++) u[i] = rng.u32();
  return u;
}
const bytes = (u: Uint32Array) => new Uint8Array(u.buffer, u.byteOffset, u.byteLength);

describe('JS engine CRC', () => {
  it('word-wise CRC-32C equals the byte-wise one', () => {
    const rng = makeRng(1);
    for (let t = 0; t < 200; t++) {
      const u = words(rng, 1 + rng.int(80));
      const n = rng.int(u.length + 1);
      expect(crc.crc32cWords(u, 0, n)).toBe(crc32c(bytes(u), 0, n * 4));
    }
    expect(crc.crc32cBytes(new TextEncoder().encode('123456789'), 0, 9)).toBe(0xe3069283); // the check value
  });

  it('a record re-sealed from the change of words 8..11 has the CRC of the whole record', () => {
    const rng = makeRng(2);
    for (let t = 0; t < 2000; t++) {
      const r = words(rng, 32);
      const before = crc.crc32cWords(r, 0, 31);
      const d = [rng.u32(), rng.u32(), rng.u32(), rng.u32()].map((x, i) => (t % 5 === i ? 0 : x));
      for (let i = 0; i < 4; i++) r[8 + i] ^= d[i];
      expect((before ^ crc.recordCrcDelta(d[0], d[1], d[2], d[3])) >>> 0).toBe(crc32c(bytes(r), 0, 124));
    }
  });

  it('a log record CRC that reuses the embedded image CRC equals the CRC of [0,16) and [20,224)', () => {
    const rng = makeRng(3);
    for (let t = 0; t < 2000; t++) {
      const w = words(rng, 56);
      w[5 + 31] = crc.crc32cWords(w, 5, 31); // a sealed image at byte 20
      let c = crc.crcWords(0xffffffff, w, 0, 4);
      c = crc.crcOverRecord(c, w[36]);
      const fast = ~crc.crcWords(c, w, 36, 20) >>> 0;
      const b = bytes(w);
      const full = Buffer.concat([b.subarray(0, 16), b.subarray(20, 224)]);
      expect(fast).toBe(crc32c(full));
    }
  });
});
