#include "log_reader.hpp"

#include <cerrno>
#include <sys/mman.h>

#include "io.hpp"
#include "log_writer.hpp"

namespace gl {

LogReader::LogReader(int fd, std::string name) : name_(std::move(name)) {
  size_ = FileSize(fd);
  if (size_ == 0) return;
  void* p = ::mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) FailErrno("mmap " + name_, errno);
  map_ = static_cast<const uint8_t*>(p);
}

LogReader::~LogReader() {
  if (map_) ::munmap(const_cast<uint8_t*>(map_), size_);
}

LogScan LogReader::Scan(uint64_t epoch, uint32_t shard, uint64_t checkpoint_lsn, uint32_t capacity) {
  LogScan out;
  auto intact = [&](const WalRecord* r) { return r->magic == kWalMagic && r->crc == WalCrc(r); };
  auto ours = [&](const WalRecord* r) { return intact(r) && r->epoch == epoch && r->shard == shard; };
  uint64_t full = size_ / kWalRecordSize * kWalRecordSize;
  uint64_t off = 0;
  if (full >= kWalRecordSize && ours(At(0)) && At(0)->type == kWalHeader) {
    off = kWalRecordSize;
    uint64_t prev_lsn = 0, prev_leg = 0;
    for (; off < full; off += kWalRecordSize) {
      const WalRecord* r = At(off);
      if (!ours(r)) break;
      bool ok = r->type >= kWalMint && r->type <= kWalImage && r->legs >= 1 && r->leg < r->legs &&
                r->slot < capacity && r->lsn > checkpoint_lsn &&
                (r->lsn > prev_lsn || (r->lsn == prev_lsn && r->leg > prev_leg));
      if (!ok) break;
      prev_lsn = r->lsn;
      prev_leg = r->leg;
      out.records++;
      if (r->durable_lsn > out.durable_lsn) out.durable_lsn = r->durable_lsn, out.durable_at = off;
    }
  }
  out.prefix_end = prefix_end_ = off;
  // What stops the prefix: a clean end (end of file, space extended ahead of
  // the writer and never written, or a record left over from an earlier epoch
  // of this reused file) or damage. Everything after it is cut; the intact
  // records of this epoch there still tell how far the log was durable.
  bool first = true;
  // (A reused file can hold megabytes of an earlier epoch's records here:
  // each is checksummed once.)
  for (uint64_t o = off; o < full; o += kWalRecordSize) {
    const WalRecord* r = At(o);
    bool clean = false;
    const bool whole = intact(r);
    if (whole && r->epoch == epoch && r->shard == shard && r->type != kWalHeader) {
      out.dropped_bytes += kWalRecordSize;
      if (r->durable_lsn > out.durable_lsn) out.durable_lsn = r->durable_lsn, out.durable_at = o;
    } else if (!whole && AllZero(reinterpret_cast<const uint8_t*>(r), kWalRecordSize)) {
      clean = true;
    } else if (whole && r->epoch < epoch) {
      clean = true;
    } else if (!(o == 0 && whole)) {
      // (record 0 that is an intact record of another epoch or shard: a file
      // not yet stamped for this epoch, no damage)
      out.dropped_bytes += kWalRecordSize;
    } else {
      clean = true;
    }
    if (first) out.damaged = !clean;
    first = false;
  }
  if (full < size_) {
    bool zero = true;
    for (uint64_t o = full; o < size_; o++)
      if (map_[o]) zero = false;
    if (!zero) {
      out.dropped_bytes += size_ - full;
      if (first) out.damaged = true;
    }
  }
  return out;
}

}  // namespace gl
