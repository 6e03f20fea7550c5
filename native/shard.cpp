#include "shard.hpp"

#include <atomic>
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

constexpr uint32_t kSlotsPerPage = kPageSize / kAccountSize;
// Pages the checkpoint copies, makes durable in the log and writes at a time:
// each chunk costs a log fsync round, so a chunk is large (measured at 10M
// accounts: 1 MiB chunks made a background checkpoint 8x longer than the old
// synchronous one).
constexpr size_t kWriteBackPages = 2048;  // 8 MiB

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

void Shard::Create(const std::string& dir, uint32_t shard, const Manifest& m) {
  int fd = OpenFile(dir + "/" + FileName("shard", shard, "bin"), O_RDWR | O_CREAT | O_TRUNC);
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
  h.shard = shard;
  h.capacity = m.index_capacity;
  h.page_count = pages;
  h.epoch = m.epoch;
  h.checkpoint_lsn = m.checkpoint_lsn;
  h.seed = m.seed;
  h.table_crc = Crc32c(table, uint64_t(pages) * 4);
  h.crc = Crc32c(&h, offsetof(IndexHeader, crc));
  std::memcpy(head.data(), &h, sizeof h);
  fd = OpenFile(dir + "/" + FileName("index", shard, "bin"), O_RDWR | O_CREAT | O_TRUNC);
  Resize(fd, IndexFileBytes(m.index_capacity), "index file");
  WriteAt(fd, head.data(), head.size(), 0, "index file");
  DataSyncOrThrow(fd, "index file");
  ::close(fd);

  for (uint32_t g = 0; g < kWalGenerations; g++) {
    fd = OpenFile(dir + "/" + WalFileName(shard, g), O_RDWR | O_CREAT | O_TRUNC);
    ::close(fd);
  }
}

Shard::Shard(const std::string& dir, uint32_t shard, const Manifest& m)
    : dir_(dir), number_(shard), capacity_(m.accounts_per_shard), seed_(m.seed) {
  try {
    std::string name = FileName("shard", shard, "bin");
    data_fd_ = OpenFile(dir + "/" + name, O_RDWR);
    uint64_t data_bytes = uint64_t(capacity_) * kAccountSize;
    if (FileSize(data_fd_) != data_bytes)
      Fail(kCorruption, name + ": size " + std::to_string(FileSize(data_fd_)) + ", expected " +
                            std::to_string(data_bytes));
    data_ = MapOrThrow(data_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, data_fd_, name);
    data_pages_ = (data_bytes + kPageSize - 1) / kPageSize;
    for (Bitmap* b : {&dirty_data_, &ckpt_data_, &written_data_, &release_data_}) b->Resize(data_pages_);

    name = FileName("index", shard, "bin");
    index_fd_ = OpenFile(dir + "/" + name, O_RDWR | O_CREAT);
    index_bytes_ = IndexFileBytes(m.index_capacity);
    // A short or missing index is rebuilt; give it its full size first so the
    // mapping never reaches past the end of the file.
    if (FileSize(index_fd_) != index_bytes_) Resize(index_fd_, index_bytes_, name);
    index_map_ = MapOrThrow(index_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, index_fd_, name);
    index_pages_ = m.index_capacity / kEntriesPerPage;
    index_header_ = reinterpret_cast<IndexHeader*>(index_map_);
    page_crcs_ = reinterpret_cast<uint32_t*>(index_map_ + kPageSize);
    file_crcs_.assign(page_crcs_, page_crcs_ + index_pages_);
    entries_ = reinterpret_cast<IndexEntry*>(index_map_ + kPageSize + IndexTableBytes(index_pages_));
    index_mask_ = m.index_capacity - 1;
    for (Bitmap* b : {&index_verified_, &index_dirty_, &ckpt_index_, &written_index_, &release_index_})
      b->Resize(index_pages_);

    for (uint32_t g = 0; g < kWalGenerations; g++) logs_[g] = std::make_unique<LogWriter>(dir, shard, g);
  } catch (...) {
    this->~Shard();
    throw;
  }
}

Shard::~Shard() {
  if (index_map_) ::munmap(index_map_, index_bytes_);
  if (data_) ::munmap(data_, uint64_t(capacity_) * kAccountSize);
  for (int* fd : {&index_fd_, &data_fd_})
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
  bool ok = h.crc == Crc32c(&h, offsetof(IndexHeader, crc)) && h.magic == kIndexMagic && h.version == kIndexVersion &&
            h.shard == number_ && h.capacity == m.index_capacity && h.page_count == index_pages_ &&
            h.seed == m.seed && h.count <= capacity_ && h.table_crc == Crc32c(page_crcs_, uint64_t(index_pages_) * 4);
  // The index of the manifest's checkpoint, or that of a background checkpoint
  // that crashed after writing it and before its commit: every entry in it is
  // of an account whose creation was durable in the log before the page was
  // written (the write-ahead rule), so replaying both generations on top of it
  // is exact. Saves a rebuild, O(data), after most crashes inside a checkpoint.
  index_ahead_ = h.epoch == m.epoch + 1 && h.checkpoint_lsn >= m.checkpoint_lsn;
  if (!ok || !((h.epoch == m.epoch && h.checkpoint_lsn == m.checkpoint_lsn) || index_ahead_)) return false;
  count_ = h.count;
  index_verified_.Clear();
  return true;
}

void Shard::RebuildIndex() {
  index_rebuilds_.fetch_add(1, std::memory_order_relaxed);
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
  // since the last committed checkpoint (dirty, or captured by a checkpoint
  // still writing); skipping them keeps a rebuild proportional to the data,
  // not the capacity.
  uint64_t file_bytes = uint64_t(capacity_) * kAccountSize;
  uint64_t off = 0;
  while (off < file_bytes) {
    off_t data = ::lseek(data_fd_, static_cast<off_t>(off), SEEK_DATA);
    uint64_t data_at = data < 0 ? file_bytes : static_cast<uint64_t>(data) / kPageSize * kPageSize;
    for (uint64_t p = off / kPageSize; p < data_at / kPageSize; p++)
      if (dirty_data_.Get(p) || ckpt_data_.Get(p)) scan(p, p + 1);
    if (data_at >= file_bytes) break;
    off_t hole = ::lseek(data_fd_, static_cast<off_t>(data_at), SEEK_HOLE);
    uint64_t hole_at = hole < 0 ? file_bytes : (static_cast<uint64_t>(hole) + kPageSize - 1) / kPageSize * kPageSize;
    scan(data_at / kPageSize, hole_at / kPageSize);
    off = hole_at;
  }
  count_ = last;
}

// ------------------------------------------------------------------ recovery

void Shard::Apply(const WalRecord& r, uint64_t offset, const std::string& file, bool index_valid) {
  uint32_t slot = r.slot;
  std::memcpy(Rec(slot), &r.account, kAccountSize);
  dirty_data_.Set(slot / kSlotsPerPage);
  any_dirty_ = true;
  if (slot >= count_) count_ = slot + 1;
  if (!index_valid) return;
  uint32_t hash = KeyHash(r.account.pubkey, seed_);
  uint32_t pos;
  int64_t found = Find(r.account.pubkey, hash, &pos);
  if (found < 0) {
    entries_[pos] = IndexEntry{slot + 1, hash};
    index_dirty_.Set(pos / kEntriesPerPage);
  } else if (found != slot) {
    Fail(kCorruption, file + ": account at offset " + std::to_string(offset) + " names slot " + std::to_string(slot) +
                          " but the index holds it at slot " + std::to_string(found));
  }
}

// ------------------------------------------------------------------ checkpoint

void Shard::Capture() {
  ckpt_data_.Swap(dirty_data_);
  dirty_data_.Clear();
  ckpt_index_.Swap(index_dirty_);
  index_dirty_.Clear();
  any_dirty_ = false;
  ckpt_count_ = count_;
  ckpt_rebuilds_ = index_rebuilds_.load(std::memory_order_relaxed);
}

uint32_t Shard::ImageSlots() {
  uint32_t n = 0;
  ForEachCapturedSlot([&](uint32_t) { n++; });
  return n;
}

// Copies pages into a buffer, then makes the log durable as far as the
// operations applied so far, then writes the copies. The JS thread may be
// changing a page while it is copied (a background checkpoint reads the
// mapping unsynchronised; the applied LSN is published with release fences
// before each change, see Core), so a copy may hold changes newer than the
// checkpoint LSN, even a torn record. Every such change has an LSN at most
// the applied LSN read after the copy, so once the log is durable that far,
// replay from either generation rewrites every such record: the file never
// holds a change that the log could lose.
void Shard::WritePages(int fd, const uint8_t* base, const Bitmap& pages, size_t page_count, uint64_t file_offset,
                       uint64_t file_bytes, const std::string& name, const DurableWait& wait,
                       uint32_t* page_crcs) {
  std::vector<uint8_t> buf(kWriteBackPages * kPageSize);
  std::vector<size_t> at;
  at.reserve(kWriteBackPages);
  auto write = [&] {
    if (at.empty()) return;
    std::atomic_thread_fence(std::memory_order_acquire);
    if (wait) wait();
    for (size_t i = 0; i < at.size();) {
      size_t j = i + 1;
      while (j < at.size() && at[j] == at[j - 1] + 1) j++;
      uint64_t off = uint64_t(at[i]) * kPageSize;
      uint64_t len = std::min<uint64_t>(uint64_t(j - i) * kPageSize, file_bytes - off);
      WriteAt(fd, buf.data() + i * kPageSize, len, file_offset + off, name);
      i = j;
    }
    // Stream the write-back a chunk at a time instead of leaving a whole
    // checkpoint's pages dirty for one fdatasync: a log fsync issued meanwhile
    // then waits behind at most a chunk, not behind gigabytes.
    if (wait) {
      uint64_t lo = file_offset + uint64_t(at.front()) * kPageSize;
      uint64_t hi = file_offset + std::min<uint64_t>(uint64_t(at.back() + 1) * kPageSize, file_bytes);
      ::sync_file_range(fd, static_cast<off_t>(lo), static_cast<off_t>(hi - lo),
                        SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
    }
    at.clear();
  };
  pages.ForEach(page_count, [&](size_t p) {
    uint8_t* copy = buf.data() + at.size() * kPageSize;
    uint64_t off = uint64_t(p) * kPageSize;
    std::memcpy(copy, base + off, std::min<uint64_t>(kPageSize, file_bytes - off));
    if (page_crcs) page_crcs[p] = Crc32c(copy, kPageSize);
    at.push_back(p);
    if (at.size() == kWriteBackPages) write();
  });
  write();
}

void Shard::WriteBackData(const DurableWait& wait) {
  std::string name = FileName("shard", number_, "bin");
  WritePages(data_fd_, data_, ckpt_data_, data_pages_, 0, uint64_t(capacity_) * kAccountSize, name, wait, nullptr);
  CrashPoint("checkpoint:after-data-write");
  DataSyncOrThrow(data_fd_, name);
}

void Shard::WriteIndex(const Manifest& next, const DurableWait& wait) {
  std::string name = FileName("index", number_, "bin");
  uint64_t entries_off = kPageSize + IndexTableBytes(index_pages_);
  WritePages(index_fd_, reinterpret_cast<const uint8_t*>(entries_), ckpt_index_, index_pages_, entries_off,
             uint64_t(index_pages_) * kPageSize, name, wait, file_crcs_.data());
  IndexHeader h{};
  // An index rebuilt since the hand-over (a damaged page found meanwhile) may
  // have been copied half cleared: its header stays invalid, so the next open
  // rebuilds it; the next checkpoint writes it whole.
  if (index_rebuilds_.load(std::memory_order_relaxed) == ckpt_rebuilds_) {
    h.magic = kIndexMagic;
    h.version = kIndexVersion;
    h.shard = number_;
    h.capacity = index_mask_ + 1;
    h.count = ckpt_count_;
    h.page_count = index_pages_;
    h.epoch = next.epoch;
    h.checkpoint_lsn = next.checkpoint_lsn;
    h.seed = seed_;
    h.table_crc = Crc32c(file_crcs_.data(), uint64_t(index_pages_) * 4);
    h.crc = Crc32c(&h, offsetof(IndexHeader, crc));
  }
  WriteAt(index_fd_, file_crcs_.data(), uint64_t(index_pages_) * 4, kPageSize, name);
  WriteAt(index_fd_, &h, sizeof h, 0, name);
  DataSyncOrThrow(index_fd_, name);
}

// Second chance (measured, bench/latency.mjs at 10M accounts under uniform
// random transfers: giving back every written page cost two faults and two
// page copies per transfer, 44k -> 6k ops/s): a page is given back only when
// the checkpoint after the one that wrote it did not capture it. In the file
// it then holds what memory holds: written back, unchanged since.
void Shard::CheckpointDone() {
  written_data_.AndNot(ckpt_data_);
  release_data_.OrWith(written_data_);
  written_data_.Swap(ckpt_data_);
  ckpt_data_.Clear();
  written_index_.AndNot(ckpt_index_);
  release_index_.OrWith(written_index_);
  written_index_.Swap(ckpt_index_);
  ckpt_index_.Clear();
  written_pending_ = true;
  release_cursor_ = 0;
  release_pending_ = true;
}

void Shard::ReleaseWritten() {
  if (!written_pending_) return;
  release_data_.OrWith(written_data_);
  written_data_.Clear();
  release_index_.OrWith(written_index_);
  written_index_.Clear();
  written_pending_ = false;
  release_cursor_ = 0;
  release_pending_ = true;
}

size_t Shard::Release(size_t budget) {
  if (!release_pending_) return 0;
  size_t looked = 0;
  // One cursor over the data pages, then the index pages.
  // A page changed since it was written is dirty, or captured by a
  // checkpoint running now: never given back (that would drop the change).
  auto give_back = [&](Bitmap& written, const Bitmap& live, const Bitmap& captured, uint8_t* base, size_t& w) {
    for (; w < written.words() && looked < budget; w++) {
      uint64_t bits = written.word(w) & ~live.word(w) & ~captured.word(w);
      written.clear_word(w);
      while (bits) {
        size_t first = static_cast<size_t>(__builtin_ctzll(bits));
        uint64_t shifted = bits >> first;
        size_t run = ~shifted == 0 ? 64 - first : static_cast<size_t>(__builtin_ctzll(~shifted));
        ::madvise(base + (w * 64 + first) * kPageSize, run * kPageSize, MADV_DONTNEED);
        looked += run;
        bits = first + run >= 64 ? 0 : bits & (~0ull << (first + run));
      }
      looked++;
    }
  };
  size_t data_words = release_data_.words();
  if (release_cursor_ < data_words) {
    size_t w = release_cursor_;
    give_back(release_data_, dirty_data_, ckpt_data_, data_, w);
    release_cursor_ = w;
  }
  if (release_cursor_ >= data_words) {
    size_t w = release_cursor_ - data_words;
    give_back(release_index_, index_dirty_, ckpt_index_, reinterpret_cast<uint8_t*>(entries_), w);
    release_cursor_ = data_words + w;
    if (w >= release_index_.words()) release_pending_ = false;
  }
  return looked;
}

}  // namespace gl
