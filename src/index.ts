export {
  Ledger, type LedgerOptions, type Recovery, type Progress, type LedgerStats, type ShardStats, type BackupOptions,
  type BackupProgress, type BackupResult, type LedgerCounters,
} from './ledger';
export { registerMetrics, METRIC_NAMES, METRIC_PREFIX, METRIC_TYPES, type MetricsOptions } from './metrics';
export { LedgerError, BatchStatus, type LedgerErrorCode, type BatchStatusName } from './errors';
export { type Account, decodeAccount } from './account';
export { type Pubkey, toBase58 } from './pubkey';
export { verifyLedger, type VerifyReport, type VerifyFinding, type VerifyProgress, type VerifyOptions } from './verify';
import './js/register';
