// One log file (shard_NNN.<generation>.wal): records are staged in memory
// during a call and written with one pwrite before the call returns; from then
// on they are in the kernel's page cache and survive kill -9. The syncer
// fdatasyncs the file; the checkpoint resets it to a HEADER of a new epoch.
//
// Tried and removed: storing one-by-one flushes through a MAP_SHARED mapping
// of the file instead of a pwrite. It cut the CPU of a one-by-one mint by 30%
// at 1M accounts with no checkpoint running. At 10M accounts under background
// checkpoints it made group fsync rounds over 25 ms 8-41x as frequent, and a
// call waited over 100 ms in 4 of 8 runs against 1 of 9 with pwrite
// (bench/results/latency-mapped-log-vs-pwrite.txt, bench/notes.md).
//
// Threads: the JS thread stages, flushes and reserves. The syncer reads fd()
// and last_lsn. While a background checkpoint runs, the file of the old
// generation belongs to the checkpoint thread, which resets it at the end;
// the JS thread does not touch it until the next hand-over.
#pragma once
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "format.h"

namespace gl {

std::string WalFileName(uint32_t shard, uint64_t epoch);  // shard_003.0.wal / shard_003.1.wal
uint32_t WalCrc(const WalRecord* r);
void SealWal(WalRecord* r);
bool AllZero(const uint8_t* p, size_t n);

class LogWriter {
 public:
  LogWriter(const std::string& dir, uint32_t shard, uint32_t generation);  // opens or creates the file
  ~LogWriter();
  LogWriter(const LogWriter&) = delete;
  LogWriter& operator=(const LogWriter&) = delete;

  const std::string& name() const { return name_; }
  int fd() const { return fd_; }

  // Ensures file room for `n` more records (may grow the file with blocks
  // allocated now); throws IO_ERROR before anything has changed.
  void Reserve(uint32_t n);
  WalRecord* Next();  // next staged record; the caller fills and seals it
  int Flush();        // writes the staged records; returns errno (0: done)
  size_t staged() const { return staged_; }
  // Bytes of records after the header, written or staged.
  uint64_t record_bytes() const {
    uint64_t pos = pos_.load(std::memory_order_relaxed);
    return pos < kWalRecordSize ? 0 : pos + staged_ - kWalRecordSize;
  }

  // A HEADER of `epoch` over record 0, fdatasynced; appends start after it.
  // `truncate`: drop everything after it too (after a recovery, so that
  // damage it cut is not met again by every later open).
  void ResetTo(uint64_t epoch, uint64_t timestamp, bool truncate = false);
  // True when the file is a HEADER of `epoch` followed by nothing, zeros or
  // intact records of earlier epochs; then appends may start after it.
  bool HeaderOnly(uint64_t epoch);
  // True when the record after the header is an intact record of `epoch`:
  // the file holds operations to replay.
  bool HoldsRecordsOf(uint64_t epoch);

  std::atomic<uint64_t> last_lsn{0};  // highest LSN written to the kernel (read by the syncer)
  uint64_t staged_lsn = 0;            // highest LSN staged (JS thread)

 private:
  std::string name_;
  uint32_t shard_;
  int fd_ = -1;
  std::atomic<uint64_t> pos_{0};  // bytes of the file written (header included); 0: no header yet
  uint64_t bound_ = 0;            // the file is allocated at least this far (chunk boundaries from 0)
  std::vector<uint8_t> stage_;
  size_t staged_ = 0;
};

}  // namespace gl
