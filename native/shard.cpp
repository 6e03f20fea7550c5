#include "shard.hpp"

#include <algorithm>
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
// Probe's answer for a damaged page (or a full table): rebuild from the account file.
constexpr int64_t kDamagedIndex = -2;
// Address space reserved per shard: the account file at its hard limit.
constexpr uint64_t kDataReservation = uint64_t(kMaxAccountsPerShard) * kAccountSize;

uint64_t PageRound(uint64_t bytes) { return (bytes + kPageSize - 1) / kPageSize * kPageSize; }

// The index capacity a rebuild gives a shard of `slots`: room for all of them
// at the load factor, never less than the manifest's.
uint32_t IndexCapacityFor(uint32_t slots, uint32_t at_least) {
  uint64_t c = at_least;
  while (c < uint64_t(slots) * kIndexLoadDivisor && c < kMaxIndexCapacity) c *= 2;
  return static_cast<uint32_t>(c);
}

// Whether an index header read at open is one this code could have written
// (its CRC, its shape): then the file is laid out for its capacity.
bool PlausibleHeader(const IndexHeader& h, uint32_t shard, uint32_t at_least) {
  return h.crc == Crc32c(&h, offsetof(IndexHeader, crc)) && h.magic == kIndexMagic && h.version == kIndexVersion &&
         h.shard == shard && h.capacity >= at_least && h.capacity <= kMaxIndexCapacity &&
         (h.capacity & (h.capacity - 1)) == 0 && h.page_count == h.capacity / kEntriesPerPage;
}

uint8_t* MapOrThrow(size_t len, int prot, int flags, int fd, const std::string& what) {
  void* p = ::mmap(nullptr, len, prot, flags, fd, 0);
  if (p == MAP_FAILED) FailErrno("mmap " + what, errno);
  return static_cast<uint8_t*>(p);
}

// A read-ahead hint for a file mapping (see Shard::SetRandomReads). A hint
// that fails changes nothing else.
void Advise(void* p, size_t len, int advice) {
  if (p != nullptr && len > 0) ::madvise(p, len, advice);
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
    // The file's size is the shard's capacity: at least the initial one, whole
    // records, at most the hard limit.
    uint64_t data_bytes = FileSize(data_fd_);
    if (data_bytes % kAccountSize != 0 || data_bytes < uint64_t(capacity_) * kAccountSize ||
        data_bytes > kDataReservation)
      Fail(kCorruption, name + ": size " + std::to_string(data_bytes) + ", expected a multiple of " +
                            std::to_string(kAccountSize) + " from " + std::to_string(uint64_t(capacity_) * kAccountSize) +
                            " to " + std::to_string(kDataReservation));
    capacity_ = static_cast<uint32_t>(data_bytes / kAccountSize);
    // Address space for the hard limit, once; the file's pages are mapped at
    // its start and, as the file grows, after them (GrowData).
    data_ = MapOrThrow(kDataReservation, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, name);
    data_mapped_ = PageRound(data_bytes);
    if (::mmap(data_, data_mapped_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED | MAP_NORESERVE, data_fd_, 0) ==
        MAP_FAILED)
      FailErrno("mmap " + name, errno);
    data_pages_ = data_mapped_ / kPageSize;
    for (Bitmap* b : {&dirty_data_, &ckpt_data_, &written_data_, &release_data_}) b->Resize(data_pages_);

    name = FileName("index", shard, "bin");
    index_fd_ = OpenFile(dir + "/" + name, O_RDWR | O_CREAT);
    // The header says the capacity the file is laid out for; one that cannot
    // be read is the manifest's (that index will be rebuilt).
    IndexHeader h{};
    uint32_t index_capacity = m.index_capacity;
    if (FileSize(index_fd_) >= sizeof h) {
      ReadAt(index_fd_, &h, sizeof h, 0, name);
      if (PlausibleHeader(h, shard, m.index_capacity)) index_capacity = h.capacity;
    }
    index_bytes_ = IndexFileBytes(index_capacity);
    // A short or missing index is rebuilt; give it its full size first so the
    // mapping never reaches past the end of the file.
    if (FileSize(index_fd_) < index_bytes_) Resize(index_fd_, index_bytes_, name);
    index_map_ = MapOrThrow(index_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, index_fd_, name);
    index_pages_ = index_capacity / kEntriesPerPage;
    index_header_ = reinterpret_cast<IndexHeader*>(index_map_);
    page_crcs_ = reinterpret_cast<uint32_t*>(index_map_ + kPageSize);
    file_crcs_.assign(page_crcs_, page_crcs_ + index_pages_);
    entries_ = file_entries_ = reinterpret_cast<IndexEntry*>(index_map_ + kPageSize + IndexTableBytes(index_pages_));
    index_mask_ = index_capacity - 1;
    file_capacity_ = index_capacity;
    for (Bitmap* b : {&index_verified_, &index_dirty_, &ckpt_index_, &written_index_, &release_index_})
      b->Resize(index_pages_);

    for (uint32_t g = 0; g < kWalGenerations; g++) logs_[g] = std::make_unique<LogWriter>(dir, shard, g);
  } catch (...) {
    this->~Shard();
    throw;
  }
}

Shard::~Shard() {
  for (const Retired& r : retired_)
    if (r.map) ::munmap(r.map, r.bytes);
  retired_.clear();
  if (old_map_) ::munmap(old_map_, old_bytes_);
  if (table_map_) ::munmap(table_map_, table_bytes_);
  old_map_ = table_map_ = nullptr;
  if (index_map_) ::munmap(index_map_, index_bytes_);
  if (data_) ::munmap(data_, kDataReservation);
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
  // Dirty now, not only at Seal: a rebuild started by the rehash step below
  // scans dirty pages, and must find this account.
  dirty_data_.Set(slot / kSlotsPerPage);
  entries_[pos] = IndexEntry{slot + 1, hash};
  index_dirty_.Set(pos / kEntriesPerPage);
  any_dirty_ = true;
  Inserted();
  return slot;
}

Status Shard::Room(std::string* detail) {
  if (count_ < capacity_) return kOk;
  if (capacity_ >= kMaxAccountsPerShard) return kCapacityExceeded;
  try {
    GrowData(NextDataCapacity(capacity_));
  } catch (const Failure& f) {
    *detail = f.message;
    return f.code;
  }
  return kOk;
}

// Extends the file with its blocks allocated (a full disk fails here, before
// any operation changes anything; the file is cut back), then maps the new
// pages at fixed addresses right after the mapped ones, over the reservation.
void Shard::SetRandomReads(bool on) {
  random_reads_ = on;
  Advise(data_, data_mapped_, on ? MADV_RANDOM : MADV_NORMAL);
  Advise(index_map_, index_bytes_, on ? MADV_RANDOM : MADV_NORMAL);
}

void Shard::GrowData(uint32_t to) {
  std::string name = FileName("shard", number_, "bin");
  uint64_t old_bytes = uint64_t(capacity_) * kAccountSize, new_bytes = uint64_t(to) * kAccountSize;
  try {
    Allocate(data_fd_, new_bytes, name);
  } catch (const Failure&) {
    if (::ftruncate(data_fd_, static_cast<off_t>(old_bytes)) != 0) {
      // the file keeps some zeros past the capacity: harmless, the next growth reuses them
    }
    throw;
  }
  uint64_t want = PageRound(new_bytes);
  if (want > data_mapped_ &&
      ::mmap(data_ + data_mapped_, want - data_mapped_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED | MAP_NORESERVE,
             data_fd_, static_cast<off_t>(data_mapped_)) == MAP_FAILED)
    FailErrno("mmap " + name, errno);
  if (random_reads_ && want > data_mapped_) Advise(data_ + data_mapped_, want - data_mapped_, MADV_RANDOM);
  data_mapped_ = want;
  capacity_ = to;
  data_pages_ = want / kPageSize;
  dirty_data_.Grow(data_pages_);
  written_data_.Grow(data_pages_);
  release_data_.Grow(data_pages_);
  CrashPoint("grow:after-data-extend");
}

void Shard::GrowFor(uint32_t slot) {
  if (slot >= kMaxAccountsPerShard) Fail(kCorruption, FileName("shard", number_, "bin") + ": slot past the hard limit");
  while (slot >= capacity_) GrowData(NextDataCapacity(capacity_));
}

// ------------------------------------------------------------------ index

bool Shard::VerifyIndexPage(const IndexEntry* entries, uint32_t page, const uint32_t* crcs, Bitmap* verified) {
  if (Crc32c(entries + uint64_t(page) * kEntriesPerPage, kPageSize) == crcs[page]) {
    verified->Set(page);
    return true;
  }
  return false;
}

int64_t Shard::Probe(IndexEntry* entries, uint32_t mask, Bitmap* verified, const uint32_t* crcs, const uint8_t* key,
                     uint32_t hash, uint32_t* pos) {
  uint32_t i = BucketOf(hash, mask);
  for (uint32_t probes = 0; probes <= mask; probes++) {
    uint32_t page = i / kEntriesPerPage;
    // Only pages of the file's mapping need a check; tables built in memory
    // are verified from the start.
    if (crcs && !verified->Get(page) && !VerifyIndexPage(entries, page, crcs, verified)) return kDamagedIndex;
    const IndexEntry e = entries[i];
    if (e.slot_plus_1 == 0) {
      *pos = i;
      return -1;
    }
    if (e.tag == hash && e.slot_plus_1 <= capacity_ && std::memcmp(Rec(e.slot_plus_1 - 1)->pubkey, key, 32) == 0)
      return e.slot_plus_1 - 1;
    i = (i + 1) & mask;
  }
  return kDamagedIndex;  // a full table cannot happen in a valid index
}

int64_t Shard::Find(const uint8_t* key, uint32_t hash, uint32_t* pos) {
  for (;;) {
    const uint32_t* crcs = entries_ == file_entries_ ? page_crcs_ : nullptr;
    int64_t found = Probe(entries_, index_mask_, &index_verified_, crcs, key, hash, pos);
    if (found == kDamagedIndex) {
      // A damaged index page: the account file is the truth, rebuild from it.
      RebuildIndex();
      continue;
    }
    if (found >= 0 || !rehashing()) return found;
    // Not (yet) moved to the new table: the old one, which never changes.
    uint32_t unused;
    const uint32_t* old_crcs = old_entries_ == file_entries_ ? page_crcs_ : nullptr;
    found = Probe(old_entries_, old_mask_, &old_verified_, old_crcs, key, hash, &unused);
    if (found == kDamagedIndex) {
      RebuildIndex();
      continue;
    }
    return found;  // -1 leaves *pos in the current table, where new keys go
  }
}

// ------------------------------------------------------------------ index growth

void Shard::Inserted() {
  if (rehashing()) {
    RehashStep(kRehashEntriesPerInsert);
  } else if (uint64_t(count_) * kIndexLoadDivisor >= uint64_t(index_mask_) + 1 &&
             index_mask_ + 1 < kMaxIndexCapacity) {
    StartRehash();
  }
}

bool Shard::NewTable(uint32_t capacity) {
  size_t bytes = uint64_t(capacity) * sizeof(IndexEntry);
  // Anonymous memory: zero pages until touched, so allocating is O(1).
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return false;
  entries_ = static_cast<IndexEntry*>(p);
  table_map_ = static_cast<uint8_t*>(p);
  table_bytes_ = bytes;
  index_mask_ = capacity - 1;
  index_pages_ = capacity / kEntriesPerPage;
  index_verified_.Resize(index_pages_);
  index_verified_.SetAll();
  index_dirty_.Resize(index_pages_);
  // Written-back pages of another table are not this one's to give back.
  written_index_.Resize(0);
  release_index_.Resize(index_pages_);
  return true;
}

void Shard::StartRehash() {
  IndexEntry* old = entries_;
  uint32_t old_mask = index_mask_;
  uint8_t* old_map = table_map_;
  size_t old_bytes = table_bytes_;
  Bitmap verified;
  verified.Swap(index_verified_);
  if (!NewTable((old_mask + 1) * 2)) {
    // No memory now: the table stays as it is (it has room) and the next
    // insert tries again.
    index_verified_.Swap(verified);
    return;
  }
  old_entries_ = old;
  old_mask_ = old_mask;
  old_map_ = old_map;
  old_bytes_ = old_bytes;
  old_verified_.Swap(verified);
  rehash_pos_ = 0;
  any_dirty_ = true;
  CrashPoint("grow:after-rehash-start");
}

// Moves the entries of `positions` positions of the old table, in order.
void Shard::RehashStep(uint32_t positions) {
  const uint32_t* old_crcs = old_entries_ == file_entries_ ? page_crcs_ : nullptr;
  for (; positions > 0 && rehash_pos_ <= old_mask_; positions--, rehash_pos_++) {
    uint32_t page = rehash_pos_ / kEntriesPerPage;
    if (old_crcs && !old_verified_.Get(page) && !VerifyIndexPage(old_entries_, page, old_crcs, &old_verified_)) {
      RebuildIndex();  // ends the rehash
      return;
    }
    const IndexEntry e = old_entries_[rehash_pos_];
    if (e.slot_plus_1 == 0) continue;
    // Never in the new table yet: new keys go there only when absent from both.
    uint32_t i = BucketOf(e.tag, index_mask_);
    while (entries_[i].slot_plus_1 != 0) i = (i + 1) & index_mask_;
    entries_[i] = e;
    index_dirty_.Set(i / kEntriesPerPage);
  }
  if (rehash_pos_ > old_mask_) EndRehash();
}

void Shard::EndRehash() {
  Retire(old_entries_, old_map_, uint64_t(old_mask_ + 1) * sizeof(IndexEntry));
  old_entries_ = nullptr;
  old_map_ = nullptr;
  old_bytes_ = 0;
  old_verified_.Resize(0);
  index_resizes_++;
  // The file holds the old layout: the next checkpoint writes the table whole.
  index_dirty_.SetAll();
  any_dirty_ = true;
  CrashPoint("grow:after-rehash-end");
}

void Shard::FinishRehash() {
  while (rehashing()) RehashStep(old_mask_ + 1);
}

void Shard::Retire(IndexEntry* entries, uint8_t* map, size_t bytes) {
  retired_.push_back({entries, map, bytes});
  if (ckpt_entries_ != entries) DropRetired();
}

// The JS thread, when no checkpoint copies from a retired table.
void Shard::DropRetired() {
  for (const Retired& r : retired_) {
    if (r.entries == ckpt_entries_) continue;
    if (r.map) ::munmap(r.map, r.bytes);
    // The file's table is never used again in this run: its private copies go.
    else ::madvise(reinterpret_cast<uint8_t*>(r.entries), r.bytes, MADV_DONTNEED);
  }
  retired_.erase(std::remove_if(retired_.begin(), retired_.end(),
                                [&](const Retired& r) { return r.entries != ckpt_entries_; }),
                 retired_.end());
}

bool Shard::LoadIndex(const Manifest& m) {
  const IndexHeader& h = *index_header_;
  bool ok = h.crc == Crc32c(&h, offsetof(IndexHeader, crc)) && h.magic == kIndexMagic && h.version == kIndexVersion &&
            h.shard == number_ && h.capacity == index_mask_ + 1 && h.page_count == index_pages_ &&
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
  // A rehash in progress is dropped: the rebuild puts every key in one table,
  // large enough for every slot of the file at the load factor.
  if (rehashing()) {
    Retire(old_entries_, old_map_, uint64_t(old_mask_ + 1) * sizeof(IndexEntry));
    old_entries_ = nullptr;
    old_map_ = nullptr;
    old_verified_.Resize(0);
  }
  uint32_t want = IndexCapacityFor(capacity_, index_mask_ + 1);
  if (want != index_mask_ + 1) {
    IndexEntry* cur = entries_;
    uint8_t* map = table_map_;
    size_t bytes = uint64_t(index_mask_ + 1) * sizeof(IndexEntry);
    if (!NewTable(want)) FailErrno("rebuild index of shard " + std::to_string(number_), ENOMEM);
    Retire(cur, map, bytes);
  } else {
    std::memset(entries_, 0, uint64_t(index_mask_ + 1) * sizeof(IndexEntry));
  }
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
  if (random_reads_) Advise(data_, data_mapped_, MADV_NORMAL);  // a scan in file order: read-ahead helps
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
  if (random_reads_) Advise(data_, data_mapped_, MADV_RANDOM);
  count_ = last;
}

// ------------------------------------------------------------------ recovery

void Shard::Apply(const WalRecord& r, uint64_t offset, const std::string& file, bool index_valid) {
  uint32_t slot = r.slot;
  // The file may have lost a growth the log outlived (a power cut): grow it
  // again, by the same steps.
  if (slot >= capacity_) GrowFor(slot);
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
    Inserted();
  } else if (found != slot) {
    Fail(kCorruption, file + ": account at offset " + std::to_string(offset) + " names slot " + std::to_string(slot) +
                          " but the index holds it at slot " + std::to_string(found));
  }
}

// ------------------------------------------------------------------ checkpoint

void Shard::Capture() {
  ckpt_data_.Swap(dirty_data_);
  dirty_data_.Resize(data_pages_);
  ckpt_data_pages_ = data_pages_;
  ckpt_data_bytes_ = uint64_t(capacity_) * kAccountSize;
  any_dirty_ = false;
  ckpt_count_ = count_;
  ckpt_rebuilds_ = index_rebuilds_.load(std::memory_order_relaxed);
  if (rehashing()) {
    // Two tables: neither is the index alone. This checkpoint leaves the index
    // file invalid (a crash before the next one rebuilds it); its dirty pages
    // stay live for the checkpoint after the rehash.
    ckpt_entries_ = nullptr;
    ckpt_index_.Resize(0);
    any_dirty_ = true;
    return;
  }
  ckpt_entries_ = entries_;
  ckpt_index_capacity_ = index_mask_ + 1;
  ckpt_index_pages_ = index_pages_;
  ckpt_index_.Swap(index_dirty_);
  index_dirty_.Resize(index_pages_);
  // A table of another capacity than the file's is written whole, in its layout.
  if (ckpt_index_capacity_ != file_capacity_) {
    ckpt_index_.Resize(index_pages_);
    ckpt_index_.SetAll();
    file_crcs_.assign(index_pages_, 0);
  }
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
                       uint32_t* page_crcs, WriteBackBuffer& chunk) {
  uint8_t* buf = nullptr;  // the chunk, taken at the first page (a file with none captured takes nothing)
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
      WriteAt(fd, buf + i * kPageSize, len, file_offset + off, name);
      i = j;
    }
    // Stream the write-back a chunk at a time instead of leaving a whole
    // checkpoint's pages dirty for one fdatasync: a log fsync issued meanwhile
    // then waits behind at most a chunk, not behind gigabytes. (A pipelined
    // variant, starting a chunk's write-out and waiting for it only after the
    // next chunk was copied, showed no clear gain at 10M accounts: checkpoints
    // 18% shorter on a loaded machine, 11% longer on a quiet one; the runs are
    // bench/results/latency-pipelined*.json.)
    if (wait) {
      uint64_t lo = file_offset + uint64_t(at.front()) * kPageSize;
      uint64_t hi = file_offset + std::min<uint64_t>(uint64_t(at.back() + 1) * kPageSize, file_bytes);
      ::sync_file_range(fd, static_cast<off_t>(lo), static_cast<off_t>(hi - lo),
                        SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
    }
    at.clear();
  };
  pages.ForEach(page_count, [&](size_t p) {
    if (buf == nullptr) buf = chunk.get();
    uint8_t* copy = buf + at.size() * kPageSize;
    uint64_t off = uint64_t(p) * kPageSize;
    std::memcpy(copy, base + off, std::min<uint64_t>(kPageSize, file_bytes - off));
    if (page_crcs) page_crcs[p] = Crc32c(copy, kPageSize);
    at.push_back(p);
    if (at.size() == kWriteBackPages) write();
  });
  write();
}

uint8_t* WriteBackBuffer::get() {
  if (!bytes_) bytes_.reset(new uint8_t[kWriteBackPages * kPageSize]);  // default-initialised: not zeroed
  return bytes_.get();
}

void Shard::WriteBackData(const DurableWait& wait, WriteBackBuffer& buf) {
  std::string name = FileName("shard", number_, "bin");
  WritePages(data_fd_, data_, ckpt_data_, ckpt_data_pages_, 0, ckpt_data_bytes_, name, wait, nullptr, buf);
  CrashPoint("checkpoint:after-data-write");
  DataSyncOrThrow(data_fd_, name);
}

void Shard::WriteIndex(const Manifest& next, const DurableWait& wait, WriteBackBuffer& buf) {
  std::string name = FileName("index", number_, "bin");
  IndexHeader h{};
  if (ckpt_entries_ == nullptr) {
    // A rehash ran at the hand-over: the index file names no checkpoint.
    WriteAt(index_fd_, &h, sizeof h, 0, name);
    DataSyncOrThrow(index_fd_, name);
    return;
  }
  const uint32_t pages = ckpt_index_pages_;
  if (ckpt_index_capacity_ != file_capacity_) {
    // A resized table: the header is made invalid and durable first, so that
    // no crash can pair it with pages of the new layout; then the file grows.
    WriteAt(index_fd_, &h, sizeof h, 0, name);
    DataSyncOrThrow(index_fd_, name);
    if (FileSize(index_fd_) < IndexFileBytes(ckpt_index_capacity_))
      Resize(index_fd_, IndexFileBytes(ckpt_index_capacity_), name);
    file_capacity_ = ckpt_index_capacity_;
    CrashPoint("checkpoint:after-index-resize");
  }
  uint64_t entries_off = kPageSize + IndexTableBytes(pages);
  WritePages(index_fd_, reinterpret_cast<const uint8_t*>(ckpt_entries_), ckpt_index_, pages, entries_off,
             uint64_t(pages) * kPageSize, name, wait, file_crcs_.data(), buf);
  // An index rebuilt since the hand-over (a damaged page found meanwhile) may
  // have been copied half cleared: its header stays invalid, so the next open
  // rebuilds it; the next checkpoint writes it whole.
  if (index_rebuilds_.load(std::memory_order_relaxed) == ckpt_rebuilds_) {
    h.magic = kIndexMagic;
    h.version = kIndexVersion;
    h.shard = number_;
    h.capacity = ckpt_index_capacity_;
    h.count = ckpt_count_;
    h.page_count = pages;
    h.epoch = next.epoch;
    h.checkpoint_lsn = next.checkpoint_lsn;
    h.seed = seed_;
    h.table_crc = Crc32c(file_crcs_.data(), uint64_t(pages) * 4);
    h.crc = Crc32c(&h, offsetof(IndexHeader, crc));
  }
  WriteAt(index_fd_, file_crcs_.data(), uint64_t(pages) * 4, kPageSize, name);
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
  // Only pages of the file's own table go back to the page cache: an
  // anonymous table's would come back as zeros.
  if (ckpt_entries_ == entries_ && entries_ == file_entries_) {
    written_index_.AndNot(ckpt_index_);
    release_index_.OrWith(written_index_);
    written_index_.Swap(ckpt_index_);
  } else {
    written_index_.Resize(0);
  }
  ckpt_index_.Clear();
  ckpt_entries_ = nullptr;
  DropRetired();
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
  if (release_cursor_ >= data_words && entries_ != file_entries_) {
    release_index_.Clear();
    release_pending_ = false;
  } else if (release_cursor_ >= data_words) {
    size_t w = release_cursor_ - data_words;
    give_back(release_index_, index_dirty_, ckpt_index_, reinterpret_cast<uint8_t*>(entries_), w);
    release_cursor_ = data_words + w;
    if (w >= release_index_.words()) release_pending_ = false;
  }
  return looked;
}

}  // namespace gl
