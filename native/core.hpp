// The ledger core: a set of shards, the global LSN, the batched-fsync syncer,
// recovery passes and the checkpoint protocol (docs/durability.md).
//
// Threads: every method but SyncTo runs on the JS thread. The syncer thread and
// SyncTo (from an AsyncWorker) only call RoundLocked, under sync_mu_, which
// reads atomics published by the JS thread and fdatasyncs log files; they never
// touch mappings. Checkpoint and Close take sync_mu_ too, so no fsync is in
// flight while logs are reset or unmapped.
#pragma once
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "format.h"
#include "shard.hpp"

namespace gl {

// How many syncEvery-sized groups a writer may run ahead of the disk before it
// waits. One group fsync over 16 logs costs 1.5-3.5 ms here; with 16 groups of
// room WAL-on mints ran at 0.64M/s, with 64 at 1.04M/s (close to the disk's
// 350 MB/s), so 64 (docs/durability.md).
constexpr uint32_t kWindowRounds = 64;

struct CoreOptions {
  bool wal = true;
  uint32_t sync_every = 1000;
  uint32_t sync_interval_ms = 1000;
};

struct ReplayResult {
  uint64_t records = 0;
  uint64_t dropped_bytes = 0;
  uint64_t last_lsn = 0;
};

struct ShardStats {
  uint32_t accounts, capacity, index_rebuilds;
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
  void Checkpoint(bool force);
  void Close();  // checkpoint-free: the caller checkpoints first when it wants to

  Status Mint(const uint8_t* key, uint64_t amount);
  Status Transfer(const uint8_t* from, const uint8_t* to, uint64_t amount);
  Status Get(const uint8_t* key, uint8_t* out);  // kOk, kAccountNotFound or kCorruption
  void MintBatch(const uint8_t* ops, size_t n, uint8_t* statuses);
  void TransferBatch(const uint8_t* ops, size_t n, uint8_t* statuses);
  void GetBatch(const uint8_t* keys, size_t n, uint8_t* out);  // throws CORRUPTION

  // Blocks until every operation with LSN <= target is durable. Any thread.
  void SyncTo(uint64_t target);
  uint64_t lsn() const { return lsn_; }
  uint64_t durable_lsn() const { return durable_lsn_.load(std::memory_order_acquire); }
  uint64_t checkpoint_lsn() const { return manifest_.checkpoint_lsn; }
  uint64_t fsyncs() const { return fsyncs_.load(); }
  uint64_t wal_bytes() const;
  bool failed() const { return failed_.load(); }
  bool wal() const { return opts_.wal; }
  const std::string& detail() const { return detail_; }  // what the last CORRUPTION status was about
  std::vector<ShardStats> Stats() const;
  size_t shard_count() const { return shards_.size(); }

 private:
  Shard& ShardFor(const uint8_t* key, uint32_t* hash) const;
  void Warm(const uint8_t* const* keys, size_t n);
  Status CheckCredit(Shard& s, const uint8_t* key, uint32_t hash, uint64_t amount, int64_t* found, uint32_t* pos);
  Status Admit(Shard& a, Shard* b);  // room in the logs, backpressure, auto-checkpoint
  // Writes every staged log record to the kernel and publishes them to the
  // syncer; false (and the ledger read-only) when a write fails.
  bool FlushLogs();
  Status Logged(uint64_t lsn);  // an operation's records are staged
  template <typename Op>
  void RunBatch(size_t n, uint8_t* statuses, Op op);
  void AppendWal(Shard& s, uint32_t type, uint32_t slot, uint64_t lsn, uint32_t legs, uint32_t leg, uint64_t amount);
  bool RoundLocked();  // one group fsync; false when the ledger has failed
  void Kick();
  void SyncerLoop();
  void StopSyncer();
  void ReleaseLock();
  void WriteImageJournal();
  // The most log records that may be unsynced at once (docs/durability.md):
  // syncEvery starts a group fsync; a writer a whole window ahead of the disk
  // waits. Kept in each log header for the torn-tail rule.
  uint32_t Window() const {
    return opts_.wal ? static_cast<uint32_t>(std::min<uint64_t>(uint64_t(opts_.sync_every) * kWindowRounds, kUnboundedWindow - 1))
                     : kUnboundedWindow;
  }
  Status Corrupt(uint32_t shard, uint32_t slot);

  std::string dir_;
  int lock_fd_ = -1;
  Manifest manifest_{};
  CoreOptions opts_;
  std::vector<std::unique_ptr<Shard>> shards_;
  bool started_ = false;
  bool closed_ = false;
  std::string detail_;
  uint64_t now_ms_ = 0;
  uint64_t warm_sink_ = 0;

  // JS thread only.
  uint64_t lsn_ = 0;
  uint64_t records_ = 0;     // log records appended (staged or written) since open
  uint64_t staged_lsn_ = 0;  // LSN of the last operation whose records are staged
  uint64_t published_lsn_ = 0;  // ... whose records are in the kernel
  std::vector<Shard*> staged_shards_;
  size_t staged_bytes_ = 0;
  bool batching_ = false;
  uint64_t flushes_ = 0, write_failures_ = 0;
  uint64_t kicked_at_ = 0;   // records_ at the last kick
  uint64_t wal_total_ = 0;   // log bytes since the last checkpoint

  // Shared with the syncer (see the header comment).
  std::atomic<uint64_t> appended_lsn_{0};
  std::atomic<uint64_t> appended_records_{0};
  std::atomic<uint64_t> durable_lsn_{0};
  std::atomic<uint64_t> durable_records_{0};
  std::atomic<uint64_t> first_unsynced_ms_{0};
  std::atomic<uint64_t> fsyncs_{0};
  std::atomic<bool> failed_{false};
  std::string failure_;
  std::mutex sync_mu_;   // one fsync round, checkpoint or close at a time
  std::mutex kick_mu_;   // guards kicked_/stop_ and the two condition variables
  std::condition_variable kick_cv_, durable_cv_;
  bool kicked_ = false;
  bool stop_ = false;
  std::thread syncer_;
};

}  // namespace gl
