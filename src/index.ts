export { Ledger, type LedgerOptions, type Recovery, type Progress, type LedgerStats, type ShardStats } from './ledger';
export { LedgerError, BatchStatus, type LedgerErrorCode, type BatchStatusName } from './errors';
export { type Account, decodeAccount } from './account';
export { type Pubkey, toBase58 } from './pubkey';
export { verifyLedger, type VerifyReport, type VerifyFinding, type VerifyProgress, type VerifyOptions } from './verify';
import './js/register';
