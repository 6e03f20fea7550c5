// Group commit: a thread that fdatasyncs the logs in rounds. The JS thread
// writes records to the kernel and publishes how far it got (Published); a
// round starts every `sync_every` records, or `sync_interval_ms` after the
// first unsynced record, or when someone waits (SyncTo, the write-ahead rule of
// the checkpoint, a writer at the unsynced bound). A round fdatasyncs every log
// with records past the durable point, then publishes the new durable point.
//
// Threads: Published/NoteFirstUnsynced run on the JS thread; everything else
// may run on any thread. Rounds are serialised by round_mu_. No N-API calls.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "counters.hpp"
#include "log_writer.hpp"

namespace gl {

class Syncer {
 public:
  Syncer() = default;
  ~Syncer() { Stop(); }

  void Configure(std::vector<LogWriter*> logs, uint32_t sync_every, uint32_t sync_interval_ms);
  void Start();  // the background thread
  void Stop();   // joins it; idempotent

  // JS thread: records up to `lsn` (`records` in all since open) are in the kernel.
  void Published(uint64_t lsn, uint64_t records) {
    appended_records_.store(records, std::memory_order_relaxed);
    appended_lsn_.store(lsn, std::memory_order_release);
    if (records - kicked_at_ >= sync_every_) {
      kicked_at_ = records;
      Kick();
    }
  }
  void NoteFirstUnsynced() { first_unsynced_ms_.store(MonoMs(), std::memory_order_relaxed); }
  // Blocks until every operation with LSN <= target is durable, waiting for
  // the JS thread to publish it first if need be. Throws IO_ERROR once failed.
  void SyncTo(uint64_t target);
  // Blocks until at most `allowed` of `records` are unsynced (a writer at the
  // bound). False when the ledger failed or the syncer stopped.
  bool WaitUnsyncedAtMost(uint64_t records, uint64_t allowed);
  // After a foreground checkpoint: everything up to here is in the shard files.
  void Reset(uint64_t lsn, uint64_t records);
  void Fail(const std::string& why);  // read-only from now on

  uint64_t durable_lsn() const { return durable_lsn_.load(std::memory_order_acquire); }
  uint64_t durable_records() const { return durable_records_.load(std::memory_order_acquire); }
  uint64_t appended_lsn() const { return appended_lsn_.load(std::memory_order_acquire); }
  uint64_t fsyncs() const { return fsyncs_.load(); }
  // Durations of the group fsyncs that made records durable (this thread's own counting).
  const FsyncHistogram& fsync_histogram() const { return fsync_histogram_; }
  bool failed() const { return failed_.load(); }
  std::string failure() const;

  static uint64_t MonoMs();
  static uint64_t MonoUs();  // precise (not the coarse clock): durations for the histograms

 private:
  bool RoundLocked();  // one group fsync; false when the ledger has failed
  void Kick();
  void Loop();

  std::vector<LogWriter*> logs_;
  uint32_t sync_every_ = 1000;
  uint32_t sync_interval_ms_ = 1000;
  uint64_t kicked_at_ = 0;  // JS thread: records at the last kick

  std::atomic<uint64_t> appended_lsn_{0};
  std::atomic<uint64_t> appended_records_{0};
  std::atomic<uint64_t> durable_lsn_{0};
  std::atomic<uint64_t> durable_records_{0};
  std::atomic<uint64_t> first_unsynced_ms_{0};
  std::atomic<uint64_t> fsyncs_{0};
  FsyncHistogram fsync_histogram_{kFsyncBoundsUs};
  std::atomic<bool> failed_{false};
  mutable std::mutex failure_mu_;
  std::string failure_;

  std::mutex round_mu_;  // one round at a time
  std::mutex kick_mu_;   // guards kicked_/stop_ and the two condition variables
  std::condition_variable kick_cv_, durable_cv_;
  bool kicked_ = false;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace gl
