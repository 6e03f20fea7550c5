// Reads one log file for recovery (docs/durability.md, "Recovery"): finds the
// valid prefix of one epoch's records, tells a clean end (zeros, stale
// records of an earlier epoch, end of file) from damage, counts what lies
// after the prefix, and collects the largest durable LSN that any intact
// record of the epoch carries. The file is mapped read-only for the reader's
// lifetime; records handed out point into that mapping.
#pragma once
#include <cstdint>
#include <string>

#include "format.h"

namespace gl {

struct LogScan {
  uint64_t prefix_end = 0;     // byte offset after the last record of the valid prefix
  uint64_t records = 0;        // records in the prefix (after the header)
  bool damaged = false;        // the prefix ended at damage, not at a clean end
  uint64_t dropped_bytes = 0;  // damaged bytes and intact records of the epoch after the prefix
  uint64_t durable_lsn = 0;    // largest durable_lsn of an intact record of the epoch (anywhere)
  uint64_t durable_at = 0;     // offset of the record that carries it
};

class LogReader {
 public:
  LogReader(int fd, std::string name);  // maps the whole file
  ~LogReader();
  LogReader(const LogReader&) = delete;
  LogReader& operator=(const LogReader&) = delete;

  const std::string& name() const { return name_; }
  // The valid prefix of `epoch` (LSNs above `checkpoint_lsn`, slots below `capacity`).
  LogScan Scan(uint64_t epoch, uint32_t shard, uint64_t checkpoint_lsn, uint32_t capacity);
  // The records of the prefix found by the last Scan, in file order.
  template <typename F> void ForEach(F f) const {
    for (uint64_t o = kWalRecordSize; o < prefix_end_; o += kWalRecordSize) f(At(o), o);
  }
  const WalRecord* first() const { return prefix_end_ > kWalRecordSize ? At(kWalRecordSize) : nullptr; }

 private:
  const WalRecord* At(uint64_t off) const { return reinterpret_cast<const WalRecord*>(map_ + off); }
  std::string name_;
  const uint8_t* map_ = nullptr;
  uint64_t size_ = 0;
  uint64_t prefix_end_ = 0;
};

}  // namespace gl
