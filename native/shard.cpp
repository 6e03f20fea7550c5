#include "shard.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "crc32c.hpp"
#include "hash.hpp"
#include "io.hpp"

namespace gl {
namespace {

// The log file grows in chunks allocated ahead of the writer, so a full disk
// is an error before an operation changes anything, not in the middle of a
// write. Small logs stay small (a quiet shard costs 256 KiB); busy ones grow
// by 4 MiB.
constexpr uint64_t kWalChunk = 4ull << 20;
constexpr uint64_t kWalFirstChunk = 256ull << 10;
constexpr uint32_t kSlotsPerPage = kPageSize / kAccountSize;

bool AllZero(const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v;
    std::memcpy(&v, p + i, 8);
    if (v) return false;
  }
  return true;
}

uint8_t* MapOrThrow(size_t len, int prot, int flags, int fd, const std::string& what) {
  void* p = ::mmap(nullptr, len, prot, flags, fd, 0);
  if (p == MAP_FAILED) FailErrno("mmap " + what, errno);
  return static_cast<uint8_t*>(p);
}

uint32_t ZeroPageCrc() {
  static const uint32_t crc = [] {
    static const uint8_t zeros[kPageSize] = {};
    return Crc32c(zeros, kPageSize);
  }();
  return crc;
}

}  // namespace

uint32_t WalCrc(const WalRecord* r) {
  const auto* p = reinterpret_cast<const uint8_t*>(r);
  uint32_t s = Crc32cUpdate(0xFFFFFFFFu, p, 16);
  return ~Crc32cUpdate(s, p + 20, kWalRecordSize - 20);
}
void SealWal(WalRecord* r) { r->crc = WalCrc(r); }

void Shard::Create(const std::string& dir, uint32_t index, const Manifest& m) {
  int fd = OpenFile(dir + "/" + FileName("shard", index, "bin"), O_RDWR | O_CREAT | O_TRUNC);
  Resize(fd, uint64_t(m.accounts_per_shard) * kAccountSize, "shard file");
  DataSyncOrThrow(fd, "shard file");
  ::close(fd);

  uint32_t pages = m.index_capacity / kEntriesPerPage;
  std::vector<uint8_t> head(kPageSize + IndexTableBytes(pages), 0);
  auto* table = reinterpret_cast<uint32_t*>(head.data() + kPageSize);
  for (uint32_t p = 0; p < pages; p++) table[p] = ZeroPageCrc();
  IndexHeader h{};
  h.magic = kIndexMagic;
  h.version = kIndexVersion;
  h.shard = index;
  h.capacity = m.index_capacity;
  h.page_count = pages;
  h.epoch = m.epoch;
  h.checkpoint_lsn = m.checkpoint_lsn;
  h.seed = m.seed;
  h.table_crc = Crc32c(table, uint64_t(pages) * 4);
  h.crc = Crc32c(&h, 60);
  std::memcpy(head.data(), &h, sizeof h);
  fd = OpenFile(dir + "/" + FileName("index", index, "bin"), O_RDWR | O_CREAT | O_TRUNC);
  Resize(fd, IndexFileBytes(m.index_capacity), "index file");
  WriteAt(fd, head.data(), head.size(), 0, "index file");
  DataSyncOrThrow(fd, "index file");
  ::close(fd);

  fd = OpenFile(dir + "/" + FileName("shard", index, "wal"), O_RDWR | O_CREAT | O_TRUNC);
  ::close(fd);
}

Shard::Shard(const std::string& dir, uint32_t index, const Manifest& m)
    : dir_(dir), index_(index), capacity_(m.accounts_per_shard), seed_(m.seed) {
  try {
    std::string name = FileName("shard", index, "bin");
    data_fd_ = OpenFile(dir + "/" + name, O_RDWR);
    uint64_t data_bytes = uint64_t(capacity_) * kAccountSize;
    if (FileSize(data_fd_) != data_bytes)
      Fail(kCorruption, name + ": size " + std::to_string(FileSize(data_fd_)) + ", expected " +
                            std::to_string(data_bytes));
    data_ = MapOrThrow(data_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, data_fd_, name);
    data_pages_ = (data_bytes + kPageSize - 1) / kPageSize;
    dirty_data_.Resize(data_pages_);

    name = FileName("index", index, "bin");
    index_fd_ = OpenFile(dir + "/" + name, O_RDWR | O_CREAT);
    index_bytes_ = IndexFileBytes(m.index_capacity);
    // A short or missing index is rebuilt; give it its full size first so the
    // mapping never reaches past the end of the file.
    if (FileSize(index_fd_) != index_bytes_) Resize(index_fd_, index_bytes_, name);
    index_map_ = MapOrThrow(index_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, index_fd_, name);
    index_pages_ = m.index_capacity / kEntriesPerPage;
    index_header_ = reinterpret_cast<IndexHeader*>(index_map_);
    page_crcs_ = reinterpret_cast<uint32_t*>(index_map_ + kPageSize);
    entries_ = reinterpret_cast<IndexEntry*>(index_map_ + kPageSize + IndexTableBytes(index_pages_));
    index_mask_ = m.index_capacity - 1;
    index_verified_.Resize(index_pages_);
    index_dirty_.Resize(index_pages_);

    name = FileName("shard", index, "wal");
    wal_fd_ = OpenFile(dir + "/" + name, O_RDWR | O_CREAT);
  } catch (...) {
    this->~Shard();
    throw;
  }
}

Shard::~Shard() {
  CloseWalScan();
  if (index_map_) ::munmap(index_map_, index_bytes_);
  if (data_) ::munmap(data_, uint64_t(capacity_) * kAccountSize);
  for (int* fd : {&wal_fd_, &index_fd_, &data_fd_})
    if (*fd >= 0) ::close(*fd), *fd = -1;
  index_map_ = nullptr;
  data_ = nullptr;
}

// ------------------------------------------------------------------ accounts

bool Shard::Valid(uint32_t slot) {
  const AccountRecord* r = Rec(slot);
  return r->version == kAccountVersion && r->slot == slot && r->crc == Crc32c(r, kAccountCrcLen);
}

void Shard::Seal(uint32_t slot) {
  AccountRecord* r = Rec(slot);
  r->crc = Crc32c(r, kAccountCrcLen);
  dirty_data_.Set(slot / kSlotsPerPage);
  any_dirty_ = true;
}

uint32_t Shard::Create(const uint8_t* key, uint32_t hash, uint32_t pos, uint64_t lsn) {
  uint32_t slot = count_++;
  AccountRecord* r = Rec(slot);
  std::memset(r, 0, kAccountSize);
  std::memcpy(r->pubkey, key, 32);
  r->created_lsn = lsn;
  r->slot = slot;
  r->version = kAccountVersion;
  entries_[pos] = IndexEntry{slot + 1, hash};
  index_dirty_.Set(pos / kEntriesPerPage);
  any_dirty_ = true;
  return slot;
}

// ------------------------------------------------------------------ index

bool Shard::VerifyIndexPage(uint32_t page) {
  if (Crc32c(entries_ + uint64_t(page) * kEntriesPerPage, kPageSize) == page_crcs_[page]) {
    index_verified_.Set(page);
    return true;
  }
  return false;
}

int64_t Shard::Find(const uint8_t* key, uint32_t hash, uint32_t* pos) {
  for (;;) {
    uint32_t i = BucketOf(hash, index_mask_);
    bool rebuilt = false;
    for (uint32_t probes = 0; probes <= index_mask_; probes++) {
      uint32_t page = i / kEntriesPerPage;
      if (!index_verified_.Get(page) && !VerifyIndexPage(page)) {
        // A damaged index page: the account file is the truth, rebuild from it.
        RebuildIndex();
        rebuilt = true;
        break;
      }
      const IndexEntry e = entries_[i];
      if (e.slot_plus_1 == 0) {
        *pos = i;
        return -1;
      }
      if (e.tag == hash && e.slot_plus_1 <= capacity_ &&
          std::memcmp(Rec(e.slot_plus_1 - 1)->pubkey, key, 32) == 0)
        return e.slot_plus_1 - 1;
      i = (i + 1) & index_mask_;
    }
    if (!rebuilt) RebuildIndex();  // a full table cannot happen in a valid index
  }
}

bool Shard::LoadIndex(const Manifest& m) {
  const IndexHeader& h = *index_header_;
  bool ok = h.crc == Crc32c(&h, 60) && h.magic == kIndexMagic && h.version == kIndexVersion &&
            h.shard == index_ && h.capacity == m.index_capacity && h.page_count == index_pages_ &&
            h.epoch == m.epoch && h.checkpoint_lsn == m.checkpoint_lsn && h.seed == m.seed &&
            h.count <= capacity_ && h.table_crc == Crc32c(page_crcs_, uint64_t(index_pages_) * 4);
  if (!ok) return false;
  count_ = h.count;
  index_verified_.Clear();
  return true;
}

void Shard::RebuildIndex() {
  index_rebuilds_++;
  std::memset(entries_, 0, uint64_t(index_mask_ + 1) * sizeof(IndexEntry));
  index_verified_.SetAll();
  index_dirty_.SetAll();
  any_dirty_ = true;
  uint32_t last = 0;
  auto scan = [&](uint64_t from_page, uint64_t to_page) {
    uint64_t first = from_page * kSlotsPerPage;
    uint64_t end = std::min<uint64_t>(to_page * kSlotsPerPage, capacity_);
    for (uint64_t s = first; s < end; s++) {
      const AccountRecord* r = Rec(static_cast<uint32_t>(s));
      if (r->version == 0 && AllZero(reinterpret_cast<const uint8_t*>(r), kAccountSize)) continue;
      uint32_t hash = KeyHash(r->pubkey, seed_);
      uint32_t pos;
      if (Find(r->pubkey, hash, &pos) < 0) {
        entries_[pos] = IndexEntry{static_cast<uint32_t>(s) + 1, hash};
      }
      last = static_cast<uint32_t>(s) + 1;
    }
  };
  // Holes in the file hold no accounts unless the page was changed in memory
  // since the last checkpoint; skipping them keeps a rebuild proportional to
  // the data, not the capacity.
  uint64_t file_bytes = uint64_t(capacity_) * kAccountSize;
  uint64_t off = 0;
  while (off < file_bytes) {
    off_t data = ::lseek(data_fd_, static_cast<off_t>(off), SEEK_DATA);
    uint64_t data_at = data < 0 ? file_bytes : static_cast<uint64_t>(data) / kPageSize * kPageSize;
    for (uint64_t p = off / kPageSize; p < data_at / kPageSize; p++)
      if (dirty_data_.Get(p)) scan(p, p + 1);
    if (data_at >= file_bytes) break;
    off_t hole = ::lseek(data_fd_, static_cast<off_t>(data_at), SEEK_HOLE);
    uint64_t hole_at = hole < 0 ? file_bytes : (static_cast<uint64_t>(hole) + kPageSize - 1) / kPageSize * kPageSize;
    scan(data_at / kPageSize, hole_at / kPageSize);
    off = hole_at;
  }
  count_ = last;
}

// ------------------------------------------------------------------ log

void Shard::WalReserve(uint32_t n) {
  // Appends follow a header of the current epoch, never anything else.
  if (wal_pos_ < kWalRecordSize) Fail(kIoError, FileName("shard", index_, "wal") + ": log has no header to append to");
  uint64_t need = wal_pos_ + staged_ + uint64_t(n) * kWalRecordSize;
  // Chunk boundaries are fixed (256K, 512K, 1M, 2M, 4M, 8M, ...) so both
  // engines give a log the same size.
  while (need > wal_bound_) {
    uint64_t target = wal_bound_ + std::min(kWalChunk, std::max(kWalFirstChunk, wal_bound_));
    Allocate(wal_fd_, target, FileName("shard", index_, "wal"));  // no-op where the file is that long
    wal_bound_ = target;
  }
}

WalRecord* Shard::WalNext() {
  if (stage_.size() < staged_ + kWalRecordSize) stage_.resize(std::max<size_t>(stage_.size() * 2, 64 * kWalRecordSize));
  auto* r = reinterpret_cast<WalRecord*>(stage_.data() + staged_);
  staged_ += kWalRecordSize;
  return r;
}

int Shard::WalFlush() {
  const uint8_t* p = stage_.data();
  size_t n = staged_;
  uint64_t off = wal_pos_;
  while (n > 0) {
    ssize_t w = ::pwrite(wal_fd_, p, n, static_cast<off_t>(off));
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    p += w;
    n -= static_cast<size_t>(w);
    off += static_cast<uint64_t>(w);
  }
  wal_pos_ += staged_;
  staged_ = 0;
  return 0;
}

void Shard::WalResetTo(uint64_t epoch, uint32_t window, uint64_t timestamp) {
  CloseWalScan();
  std::string name = FileName("shard", index_, "wal");
  staged_ = 0;
  // The file and its blocks are kept for the next epoch: overwriting blocks
  // that are allocated and written costs a fraction of extending the file
  // (measured 2-3x), and the header's new epoch makes every old record stale.
  // A log that grew far past what this epoch used is cut back.
  if (FileSize(wal_fd_) > 4 * wal_pos_ + kWalChunk) {
    Resize(wal_fd_, 0, name);
    wal_bound_ = 0;
  }
  WalRecord h{};
  h.magic = kWalMagic;
  h.timestamp = timestamp;
  h.type = kWalHeader;
  h.epoch = epoch;
  h.shard = index_;
  h.window = window;
  SealWal(&h);
  WriteAt(wal_fd_, &h, sizeof h, 0, name);
  DataSyncOrThrow(wal_fd_, name);
  wal_pos_ = kWalRecordSize;
  wal_last_lsn.store(0);
}

bool Shard::WalHeaderOnly(uint64_t epoch) {
  uint64_t size = FileSize(wal_fd_);
  if (size < kWalRecordSize) return false;
  WalRecord r[2];
  size_t n = size >= 2 * kWalRecordSize ? 2 : 1;
  ReadAt(wal_fd_, r, n * kWalRecordSize, 0, FileName("shard", index_, "wal"));
  auto current = [&](const WalRecord& x) {
    return x.magic == kWalMagic && x.epoch == epoch && x.shard == index_ && x.crc == WalCrc(&x);
  };
  // A header of this epoch followed by nothing, zeros, or an intact record of
  // an earlier epoch (the file is reused). Anything else, even damage, is for
  // the replay path to judge.
  auto stale = [&](const WalRecord& x) {
    return AllZero(reinterpret_cast<const uint8_t*>(&x), kWalRecordSize) ||
           (x.magic == kWalMagic && x.epoch < epoch && x.crc == WalCrc(&x));
  };
  if (!current(r[0]) || r[0].type != kWalHeader || (n == 2 && !stale(r[1]))) return false;
  wal_pos_ = kWalRecordSize;
  return true;
}

void Shard::CloseWalScan() {
  if (scan_map_) ::munmap(const_cast<uint8_t*>(scan_map_), scan_len_);
  scan_map_ = nullptr;
  scan_len_ = 0;
}

WalScan Shard::ScanWal(uint64_t epoch, uint64_t checkpoint_lsn, uint32_t fallback_window, bool repair) {
  WalScan out;
  std::string name = FileName("shard", index_, "wal");
  uint64_t size = FileSize(wal_fd_);
  CloseWalScan();
  if (size > 0) {
    scan_map_ = MapOrThrow(size, PROT_READ, MAP_SHARED, wal_fd_, name);
    scan_len_ = size;
  }
  auto rec = [&](uint64_t off) { return reinterpret_cast<const WalRecord*>(scan_map_ + off); };
  auto belongs = [&](const WalRecord* r) {
    return r->magic == kWalMagic && r->epoch == epoch && r->shard == index_ && r->crc == WalCrc(r);
  };
  uint64_t full = size / kWalRecordSize * kWalRecordSize;
  uint32_t window = fallback_window;
  uint64_t off = 0;
  if (full >= kWalRecordSize && belongs(rec(0)) && rec(0)->type == kWalHeader) {
    window = rec(0)->window;
    off = kWalRecordSize;
    uint64_t prev_lsn = 0, prev_leg = 0;
    for (; off < full; off += kWalRecordSize) {
      const WalRecord* r = rec(off);
      if (!belongs(r)) break;
      bool ok = r->type >= kWalMint && r->type <= kWalImage && r->legs >= 1 && r->leg < r->legs &&
                r->slot < capacity_ && r->lsn > checkpoint_lsn &&
                (r->lsn > prev_lsn || (r->lsn == prev_lsn && r->leg > prev_leg));
      if (!ok) break;
      prev_lsn = r->lsn;
      prev_leg = r->leg;
      out.records++;
      out.max_lsn = r->lsn;
    }
  }
  out.valid_end = off;
  // Everything from `off` on is cut. That is a torn tail only if what follows
  // could still have been unsynced: at most `window` valid records.
  uint64_t valid_after = 0;
  for (uint64_t o = off; o < full; o += kWalRecordSize) {
    const WalRecord* r = rec(o);
    if (belongs(r) && r->type != kWalHeader) {
      valid_after++;
      out.dropped_bytes += kWalRecordSize;
    } else if (AllZero(reinterpret_cast<const uint8_t*>(r), kWalRecordSize)) {
      // space extended ahead of the writer and never written
    } else if (r->magic == kWalMagic && r->epoch < epoch) {
      // left over from an earlier epoch (the file is reused): stale, not damage
    } else {
      out.dropped_bytes += kWalRecordSize;
    }
  }
  for (uint64_t o = full; o < size; o++)
    if (scan_map_[o]) {
      out.dropped_bytes += size - full;
      break;
    }
  if (!repair && window != kUnboundedWindow && valid_after > window)
    Fail(kCorruption, name + ": damaged record at offset " + std::to_string(off) + " is followed by " +
                          std::to_string(valid_after) + " valid records (more than one sync window of " +
                          std::to_string(window) + ")");
  scan_end_ = out.valid_end;
  return out;
}

uint64_t Shard::FirstLsn(uint32_t* type) const {
  if (scan_end_ <= kWalRecordSize) return 0;
  const auto* r = reinterpret_cast<const WalRecord*>(scan_map_ + kWalRecordSize);
  *type = r->type;
  return r->lsn;
}

void Shard::CountWal(uint64_t base, std::vector<uint32_t>& counts, std::vector<uint32_t>& legs) const {
  for (uint64_t o = kWalRecordSize; o < scan_end_; o += kWalRecordSize) {
    const auto* r = reinterpret_cast<const WalRecord*>(scan_map_ + o);
    if (r->lsn < base || r->lsn - base >= counts.size()) continue;
    size_t i = static_cast<size_t>(r->lsn - base);
    counts[i]++;
    if (legs[i] == 0) legs[i] = r->legs;
    else if (legs[i] != r->legs) legs[i] = UINT32_MAX;  // disagreeing legs: never complete
  }
}

uint64_t Shard::ApplyWal(uint64_t cut_lsn, bool index_valid, uint64_t* dropped_bytes) {
  uint64_t applied = 0;
  for (uint64_t o = kWalRecordSize; o < scan_end_; o += kWalRecordSize) {
    const auto* r = reinterpret_cast<const WalRecord*>(scan_map_ + o);
    if (r->lsn >= cut_lsn) {
      *dropped_bytes += scan_end_ - o;
      break;
    }
    uint32_t slot = r->slot;
    std::memcpy(Rec(slot), &r->account, kAccountSize);
    dirty_data_.Set(slot / kSlotsPerPage);
    any_dirty_ = true;
    if (slot >= count_) count_ = slot + 1;
    if (index_valid) {
      uint32_t hash = KeyHash(r->account.pubkey, seed_);
      uint32_t pos;
      int64_t found = Find(r->account.pubkey, hash, &pos);
      if (found < 0) {
        entries_[pos] = IndexEntry{slot + 1, hash};
        index_dirty_.Set(pos / kEntriesPerPage);
      } else if (found != slot) {
        Fail(kCorruption, FileName("shard", index_, "wal") + ": account at offset " + std::to_string(o) +
                              " names slot " + std::to_string(slot) + " but the index holds it at slot " +
                              std::to_string(found));
      }
    }
    applied++;
  }
  CloseWalScan();
  return applied;
}

// ------------------------------------------------------------------ checkpoint

uint32_t Shard::ImageSlots() {
  uint32_t n = 0;
  ForEachDirtySlot([&](uint32_t) { n++; });
  return n;
}

void Shard::WriteBackData() {
  std::string name = FileName("shard", index_, "bin");
  size_t run_start = 0, run_len = 0;
  uint64_t file_bytes = uint64_t(capacity_) * kAccountSize;
  auto flush = [&] {
    if (run_len) {
      uint64_t off = run_start * kPageSize;
      WriteAt(data_fd_, data_ + off, std::min<uint64_t>(run_len * kPageSize, file_bytes - off), off, name);
    }
    run_len = 0;
  };
  dirty_data_.ForEach(data_pages_, [&](size_t p) {
    if (run_len && p == run_start + run_len) {
      run_len++;
      return;
    }
    flush();
    run_start = p;
    run_len = 1;
  });
  flush();
  CrashPoint("checkpoint:after-data-write");
  DataSyncOrThrow(data_fd_, name);
}

void Shard::WriteIndex(const Manifest& next) {
  std::string name = FileName("index", index_, "bin");
  uint64_t entries_off = kPageSize + IndexTableBytes(index_pages_);
  index_dirty_.ForEach(index_pages_, [&](size_t p) {
    const auto* page = reinterpret_cast<const uint8_t*>(entries_ + p * kEntriesPerPage);
    page_crcs_[p] = Crc32c(page, kPageSize);
    WriteAt(index_fd_, page, kPageSize, entries_off + p * kPageSize, name);
  });
  IndexHeader& h = *index_header_;
  h = IndexHeader{};
  h.magic = kIndexMagic;
  h.version = kIndexVersion;
  h.shard = index_;
  h.capacity = index_mask_ + 1;
  h.count = count_;
  h.page_count = index_pages_;
  h.epoch = next.epoch;
  h.checkpoint_lsn = next.checkpoint_lsn;
  h.seed = seed_;
  h.table_crc = Crc32c(page_crcs_, uint64_t(index_pages_) * 4);
  h.crc = Crc32c(&h, 60);
  WriteAt(index_fd_, page_crcs_, uint64_t(index_pages_) * 4, kPageSize, name);
  WriteAt(index_fd_, &h, sizeof h, 0, name);
  DataSyncOrThrow(index_fd_, name);
}

void Shard::ClearDirty() {
  dirty_data_.Clear();
  index_dirty_.Clear();
  any_dirty_ = false;
}

}  // namespace gl
