/**
 * A u128 running total of u64 amounts given as two u32 words, without a bigint per addition: the words are summed
 * in two doubles (exact below 2^53) and folded into a bigint before either could lose a bit.
 */
/** Sums past this are folded: one more u32 word still leaves them below 2^53. */
const FOLD_AT = 2 ** 52;

export class Supply {
  #base: bigint;
  #lo = 0;
  #hi = 0;

  constructor(base = 0n) {
    this.#base = base;
  }

  add(lo: number, hi: number): void {
    this.#lo += lo;
    this.#hi += hi;
    if (this.#lo >= FOLD_AT || this.#hi >= FOLD_AT) this.#fold();
  }

  #fold(): void {
    this.#base += BigInt(this.#lo) + (BigInt(this.#hi) << 32n);
    this.#lo = 0;
    this.#hi = 0;
  }

  value(): bigint {
    return this.#base + BigInt(this.#lo) + (BigInt(this.#hi) << 32n);
  }

  set(v: bigint): void {
    this.#base = v;
    this.#lo = 0;
    this.#hi = 0;
  }
}

