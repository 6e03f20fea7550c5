import { LedgerError } from './errors';

export const MAX_U64 = (1n << 64n) - 1n;

/** A validated amount: numbers stay numbers (the engines take both). */
export function checkAmount(amount: unknown): bigint | number {
  if (typeof amount === 'bigint') {
    if (amount >= 1n && amount <= MAX_U64) return amount;
  } else if (typeof amount === 'number') {
    if (Number.isSafeInteger(amount) && amount >= 1) return amount;
  }
  throw new LedgerError('INVALID_AMOUNT', `amount must be a bigint or safe integer in 1..2^64-1, got ${describe(amount)}`);
}

function describe(v: unknown): string {
  if (typeof v === 'bigint') return `${v}n`;
  if (typeof v === 'number') return String(v);
  return typeof v;
}
