// The ledger core: a set of shards, the global LSN, the operations, recovery
// and the two checkpoints (docs/durability.md). The pieces it drives have
// homes of their own: the lock (lock.hpp), the log files (log_writer.hpp,
// log_reader.hpp), group commit (syncer.hpp) and the background checkpoint's
// thread (checkpointer.hpp).
//
// Threads: every method runs on the JS thread except SyncTo and
// WaitCheckpoint (AsyncWorkers) and WriteCheckpoint (the checkpoint thread),
// which touch only the syncer, the shards' captured state and atomics.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "checkpointer.hpp"
#include "counters.hpp"
#include "format.h"
#include "lock.hpp"
#include "shard.hpp"
#include "syncer.hpp"

namespace gl {

struct CoreOptions {
  bool wal = true;
  uint32_t sync_every = 1000;
  uint32_t sync_interval_ms = 1000;
  uint64_t max_unsynced_records = 8000;
  uint64_t checkpoint_every_bytes = 64ull << 20;
  uint64_t max_accounts = 0;  // 0: only the hard limit of each shard
  bool read_ahead = true;     // false: Shard::SetRandomReads
};

struct ReplayResult {
  uint64_t records = 0;
  uint64_t dropped_bytes = 0;
  uint64_t last_lsn = 0;
};

struct ShardStats {
  uint32_t accounts, capacity, index_rebuilds, index_capacity, index_resizes;
};

class Core {
 public:
  explicit Core(const std::string& dir);  // takes the directory lock or throws LOCKED
  ~Core();

  void Create(const Manifest& m);
  std::vector<bool> Open(const Manifest& m, const CoreOptions& o);  // returns index validity per shard
  bool LogsHeaderOnly();
  ReplayResult Replay(const std::vector<bool>& index_valid, bool repair);
  void RebuildIndex(uint32_t shard) { shards_[shard]->RebuildIndex(); }
  void Start();
  void Close();  // checkpoint-free: the caller checkpoints first when it wants to

  // One operation, counted by its result (counters.hpp).
  Status Mint(const uint8_t* key, uint64_t amount) { return Count(kOpMint, MintOp(key, amount)); }
  Status Transfer(const uint8_t* from, const uint8_t* to, uint64_t amount) {
    return Count(kOpTransfer, TransferOp(from, to, amount));
  }
  Status Get(const uint8_t* key, uint8_t* out);  // kOk, kAccountNotFound or kCorruption
  void MintBatch(const uint8_t* ops, size_t n, uint8_t* statuses);
  void TransferBatch(const uint8_t* ops, size_t n, uint8_t* statuses);
  void GetBatch(const uint8_t* keys, size_t n, uint8_t* out);  // throws CORRUPTION

  // Foreground checkpoint (open, close, wal:false): on this thread, nothing
  // else running; waits for a background one first.
  void CheckpointSync(bool force, CheckpointTrigger trigger);
  // Background checkpoint: the hand-over here, the rest on the checkpoint
  // thread. Returns the run to wait for (0: nothing to do, or done already).
  uint64_t BeginCheckpoint(bool force, CheckpointTrigger trigger);
  // While paused the checkpoint policy starts none (a backup copies the files
  // of the last one); explicit ones are the caller's to hold back.
  void PauseCheckpoints(bool paused) { checkpoints_paused_ = paused; }
  void WaitCheckpoint(uint64_t seq) { checkpointer_.Wait(seq); }  // any thread
  // JS thread: bookkeeping after a background checkpoint, then a slice of
  // giving written-back pages back. True while pages remain.
  bool Maintain();
  void FinishCheckpoint();

  // Blocks until every operation with LSN <= target is durable. Any thread.
  void SyncTo(uint64_t target);
  uint64_t lsn() const { return lsn_; }
  uint64_t durable_lsn() const { return syncer_.durable_lsn(); }
  uint64_t checkpoint_lsn() const { return committed_lsn_.load(); }
  uint64_t fsyncs() const { return syncer_.fsyncs(); }
  uint64_t wal_bytes() const;
  bool failed() const { return syncer_.failed(); }
  bool wal() const { return opts_.wal; }
  bool checkpoint_running() const { return checkpointer_.running(); }
  const Checkpointer& checkpointer() const { return checkpointer_; }
  const std::string& detail() const { return detail_; }  // what the last CORRUPTION status was about
  std::vector<ShardStats> Stats() const;
  u128 supply() const { return supply_; }  // total minted by the operations <= lsn()
  void Counters(double* out) const;        // kCounterSlots values (counters.hpp)
  // Per shard, where the records written to the kernel end in the active
  // generation's file (header included): a backup copies this much.
  std::vector<uint64_t> LogEnds() const;
  size_t shard_count() const { return shards_.size(); }
  // Replication's record tap (src/replication.ts): while on, every MINT, DEBIT and CREDIT record the log gets is
  // also appended here, in LSN order; DrainTap hands them over and empties it. JS thread only.
  void SetTap(bool on) {
    tap_on_ = on;
    if (!on) std::vector<uint8_t>().swap(tap_);
  }
  void DrainTap(std::vector<uint8_t>* out) {
    out->swap(tap_);
    tap_.clear();
  }

 private:
  Status Count(CountedOp op, Status st) {
    op_counts_[op * kStatusSlots + st]++;
    return st;
  }
  Status MintOp(const uint8_t* key, uint64_t amount);
  Status TransferOp(const uint8_t* from, const uint8_t* to, uint64_t amount);
  Shard& ShardFor(const uint8_t* key, uint32_t* hash) const;
  void Warm(const uint8_t* const* keys, size_t n);
  Status CheckCredit(Shard& s, const uint8_t* key, uint32_t hash, uint64_t amount, int64_t* found, uint32_t* pos);
  Status Admit(Shard& a, Shard* b);  // room in the logs, the unsynced bound, checkpoint policy
  void CheckpointPolicy();
  // Writes every staged log record to the kernel and publishes them to the
  // syncer; false (and the ledger read-only) when a write fails.
  bool FlushLogs();
  Status Logged(uint64_t lsn);  // an operation's records are staged
  uint64_t NextLsn() {
    // Published before the operation changes any page: a background
    // checkpoint that copies a page reads it after the copy (Shard::WritePages).
    applied_lsn_.store(++lsn_, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);
    return lsn_;
  }
  template <typename Op>
  void RunBatch(size_t n, uint8_t* statuses, Op op);
  void AppendWal(Shard& s, uint32_t type, uint32_t slot, uint64_t lsn, uint32_t legs, uint32_t leg, uint64_t amount);
  void WriteImageJournal();
  void WriteCheckpoint(const Manifest& next, uint64_t started_us, CheckpointTrigger trigger);  // checkpoint thread
  void WriteBackAndCommit(const Manifest& next, const DurableWait& wait);
  void Commit(const Manifest& next);
  bool AnyDirty() const;
  void Failed(const std::string& why);
  Status Corrupt(uint32_t shard, uint32_t slot);

  std::string dir_;
  std::unique_ptr<DirLock> lock_;
  Manifest manifest_{};  // the committed manifest (written by the checkpoint thread at its commit)
  std::atomic<uint64_t> committed_lsn_{0};
  CoreOptions opts_;
  std::vector<std::unique_ptr<Shard>> shards_;
  bool started_ = false;
  bool closed_ = false;
  std::string detail_;
  uint64_t now_ms_ = 0;
  uint64_t warm_sink_ = 0;

  // JS thread only.
  uint64_t lsn_ = 0;
  uint64_t accounts_ = 0;      // in all shards (maxAccounts), counted from start()
  uint64_t active_epoch_ = 0;  // epoch of the log generation appends go to
  bool next_prepared_ = false; // the next generation's file holds a fresh header
  uint64_t records_ = 0;       // log records appended (staged or written) since open
  uint64_t staged_lsn_ = 0;    // LSN of the last operation whose records are staged
  uint64_t published_lsn_ = 0; // ... whose records are in the kernel
  std::vector<LogWriter*> staged_logs_;
  size_t staged_bytes_ = 0;
  bool batching_ = false;
  bool throttled_ = false;     // this call already waited for the checkpoint
  uint64_t flushes_ = 0, write_failures_ = 0;
  uint64_t handover_bytes_ = 0;     // log bytes since the last hand-over
  uint64_t bytes_at_handover_ = 0;  // log bytes since the last commit, at the hand-over
  bool checkpoints_paused_ = false;
  u128 supply_ = 0;                 // total minted up to lsn_
  uint64_t op_counts_[kCountedOps * kStatusSlots] = {};
  uint64_t corruptions_ = 0;        // damaged account records met by operations
  bool tap_on_ = false;             // SetTap
  std::vector<uint8_t> tap_;        // whole records not drained yet

  std::atomic<uint64_t> applied_lsn_{0};
  std::mutex close_mu_;  // SyncTo against Close
  Syncer syncer_;
  Checkpointer checkpointer_;
};

}  // namespace gl
