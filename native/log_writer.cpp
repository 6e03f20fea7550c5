#include "log_writer.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>

#include "crc32c.hpp"
#include "io.hpp"

namespace gl {
namespace {

// The file grows in chunks allocated ahead of the writer, so a full disk is
// an error before an operation changes anything, not in the middle of a
// write. Small logs stay small (a quiet shard costs 256 KiB); busy ones grow
// by 4 MiB. The boundaries are fixed (256K, 512K, 1M, 2M, 4M, 8M, ...) so both
// engines give a log the same size.
constexpr uint64_t kWalChunk = 4ull << 20;
constexpr uint64_t kWalFirstChunk = 256ull << 10;

}  // namespace

std::string WalFileName(uint32_t shard, uint64_t epoch) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "shard_%03u.%u.wal", shard, static_cast<unsigned>(epoch & 1));
  return buf;
}

bool AllZero(const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v;
    std::memcpy(&v, p + i, 8);
    if (v) return false;
  }
  return true;
}

uint32_t WalCrc(const WalRecord* r) {
  const auto* p = reinterpret_cast<const uint8_t*>(r);
  uint32_t s = Crc32cUpdate(0xFFFFFFFFu, p, offsetof(WalRecord, crc));
  constexpr size_t after = offsetof(WalRecord, crc) + sizeof(uint32_t);
  return ~Crc32cUpdate(s, p + after, kWalRecordSize - after);
}
void SealWal(WalRecord* r) { r->crc = WalCrc(r); }

LogWriter::LogWriter(const std::string& dir, uint32_t shard, uint32_t generation)
    : name_(WalFileName(shard, generation)), shard_(shard) {
  fd_ = OpenFile(dir + "/" + name_, O_RDWR | O_CREAT);
}

LogWriter::~LogWriter() {
  if (fd_ >= 0) ::close(fd_);
}

void LogWriter::Reserve(uint32_t n) {
  uint64_t pos = pos_.load(std::memory_order_relaxed);
  // Appends follow a header of the current epoch, never anything else.
  if (pos < kWalRecordSize) Fail(kIoError, name_ + ": log has no header to append to");
  uint64_t need = pos + staged_ + uint64_t(n) * kWalRecordSize;
  while (need > bound_) {
    uint64_t target = bound_ + std::min(kWalChunk, std::max(kWalFirstChunk, bound_));
    Allocate(fd_, target, name_);  // no-op where the file is that long
    bound_ = target;
  }
}

WalRecord* LogWriter::Next() {
  if (stage_.size() < staged_ + kWalRecordSize) stage_.resize(std::max<size_t>(stage_.size() * 2, 64 * kWalRecordSize));
  auto* r = reinterpret_cast<WalRecord*>(stage_.data() + staged_);
  staged_ += kWalRecordSize;
  return r;
}

int LogWriter::Flush() {
  const uint8_t* p = stage_.data();
  size_t n = staged_;
  uint64_t pos = pos_.load(std::memory_order_relaxed);
  uint64_t off = pos;
  while (n > 0) {
    ssize_t w = ::pwrite(fd_, p, n, static_cast<off_t>(off));
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    p += w;
    n -= static_cast<size_t>(w);
    off += static_cast<uint64_t>(w);
  }
  pos_.store(pos + staged_, std::memory_order_relaxed);
  staged_ = 0;
  return 0;
}

void LogWriter::ResetTo(uint64_t epoch, uint64_t timestamp, bool truncate) {
  staged_ = 0;
  // The file and its blocks are kept for a later epoch: overwriting blocks
  // that are allocated and written costs a fraction of extending the file
  // (measured 2-3x), and the header's new epoch makes every old record stale.
  // A log that grew far past what its epoch used is cut back.
  uint64_t used = pos_.load(std::memory_order_relaxed);
  if (truncate || FileSize(fd_) > 4 * used + kWalChunk) {
    Resize(fd_, 0, name_);
    bound_ = 0;
  }
  WalRecord h{};
  h.magic = kWalMagic;
  h.timestamp = timestamp;
  h.type = kWalHeader;
  h.epoch = epoch;
  h.shard = shard_;
  SealWal(&h);
  WriteAt(fd_, &h, sizeof h, 0, name_);
  DataSyncOrThrow(fd_, name_);
  pos_.store(kWalRecordSize, std::memory_order_relaxed);
  last_lsn.store(0);
  staged_lsn = 0;
}

bool LogWriter::HeaderOnly(uint64_t epoch) {
  uint64_t size = FileSize(fd_);
  if (size < kWalRecordSize) return false;
  WalRecord r[2];
  size_t n = size >= 2 * kWalRecordSize ? 2 : 1;
  ReadAt(fd_, r, n * kWalRecordSize, 0, name_);
  auto current = [&](const WalRecord& x) {
    return x.magic == kWalMagic && x.epoch == epoch && x.shard == shard_ && x.crc == WalCrc(&x);
  };
  // A header of this epoch followed by nothing, zeros, or an intact record of
  // an earlier epoch (the file is reused). Anything else, even damage, is for
  // the replay path to judge.
  auto stale = [&](const WalRecord& x) {
    return AllZero(reinterpret_cast<const uint8_t*>(&x), kWalRecordSize) ||
           (x.magic == kWalMagic && x.epoch < epoch && x.crc == WalCrc(&x));
  };
  if (!current(r[0]) || r[0].type != kWalHeader || (n == 2 && !stale(r[1]))) return false;
  pos_.store(kWalRecordSize, std::memory_order_relaxed);
  bound_ = 0;
  return true;
}

bool LogWriter::HoldsRecordsOf(uint64_t epoch) {
  if (FileSize(fd_) < 2 * kWalRecordSize) return false;
  WalRecord r;
  ReadAt(fd_, &r, sizeof r, kWalRecordSize, name_);
  return r.magic == kWalMagic && r.epoch == epoch && r.shard == shard_ && r.type != kWalHeader && r.crc == WalCrc(&r);
}

}  // namespace gl
