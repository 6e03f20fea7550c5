export { Ledger, type LedgerOptions, type Recovery, type Progress, type LedgerStats, type ShardStats } from './ledger';
export { LedgerError, BatchStatus, type LedgerErrorCode, type BatchStatusName } from './errors';
export { type Account, decodeAccount } from './account';
export { type Pubkey, toBase58 } from './pubkey';
import './js/register';
