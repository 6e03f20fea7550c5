/**
 * Error codes and batch statuses. A status byte is what the native core returns
 * from an operation and what a batch stores per op; this file is the only place
 * that names them (native/format.h holds the same numbers as `gl::Status`).
 */
export const BatchStatus = Object.freeze({
  OK: 0,
  INVALID_PUBKEY: 1,
  INVALID_AMOUNT: 2,
  SAME_ACCOUNT: 3,
  ACCOUNT_NOT_FOUND: 4,
  INSUFFICIENT_FUNDS: 5,
  OVERFLOW: 6,
  CAPACITY_EXCEEDED: 7,
  CORRUPTION: 8,
  IO_ERROR: 9,
  CLOSED: 10,
  LOCKED: 11,
} as const);
export type BatchStatusName = keyof typeof BatchStatus;

export type LedgerErrorCode =
  | 'INVALID_PUBKEY'
  | 'INVALID_AMOUNT'
  | 'INVALID_BATCH'
  | 'INVALID_OPTIONS'
  | 'INSUFFICIENT_FUNDS'
  | 'ACCOUNT_NOT_FOUND'
  | 'SAME_ACCOUNT'
  | 'OVERFLOW'
  | 'CAPACITY_EXCEEDED'
  | 'CLOSED'
  | 'LOCKED'
  | 'CORRUPTION'
  | 'IO_ERROR'
  | 'FENCED'
  | 'READ_ONLY';

export class LedgerError extends Error {
  readonly code: LedgerErrorCode;
  constructor(code: LedgerErrorCode, message: string) {
    super(message);
    this.name = 'LedgerError';
    this.code = code;
  }
}

const names: string[] = [];
for (const [name, value] of Object.entries(BatchStatus)) names[value] = name;

export function statusName(status: number): LedgerErrorCode {
  const name = names[status];
  if (name === undefined || name === 'OK') throw new Error(`not an error status: ${status}`);
  return name as LedgerErrorCode;
}

const defaultMessages: Partial<Record<LedgerErrorCode, string>> = {
  INVALID_AMOUNT: 'amount must be an integer in 1..2^64-1',
  SAME_ACCOUNT: 'cannot transfer from an account to itself',
  ACCOUNT_NOT_FOUND: 'source account does not exist',
  INSUFFICIENT_FUNDS: 'source balance is lower than the amount',
  OVERFLOW: 'balance would exceed 2^64-1',
  CAPACITY_EXCEEDED: 'the shard holding this account is full',
  CLOSED: 'ledger is closed',
  IO_ERROR: 'ledger is read-only after an I/O failure',
  FENCED: 'another writer appends to the replication stream: this ledger is read-only',
  READ_ONLY: 'a follower applies the replication stream: it takes no writes until promoted',
};

/** The LedgerError for a non-zero status byte; `detail` says more when the core knows more. */
export function errorFor(status: number, detail?: string): LedgerError {
  const code = statusName(status);
  return new LedgerError(code, detail || defaultMessages[code] || code);
}
