// One shard: its account file (private mapping), its index (private mapping,
// pages verified on first touch) and its two log files, one per generation.
//
// Why a private mapping for the account file: the kernel may write dirty
// MAP_SHARED pages back whenever it likes, before the log records describing
// them are durable. Private pages never reach the file by themselves; the
// checkpoint writes them back after the log that covers them is durable, and
// then gives the private copies back (MADV_DONTNEED), so that a page no longer
// changed is an ordinary, reclaimable file page again.
//
// Growth (docs/durability.md, "Shards that grow"): the account file is mapped
// into address space reserved once for kMaxAccountsPerShard accounts, so it
// grows in place (GrowData) and never moves. The index doubles by an
// incremental rehash: a new table takes new keys while every insert moves a few
// entries of the old one (RehashStep); lookups consult both meanwhile. No
// account is ever deleted, so the old table never changes while it drains.
//
// Threads: the JS thread owns everything but the checkpoint's captured state
// (ckpt_*), which the checkpoint thread reads between the hand-over (Capture)
// and the end of the checkpoint. The checkpoint thread also reads the mapped
// pages while the JS thread may be changing them: see WriteBackData. A table
// the checkpoint copies from is never unmapped before the checkpoint is done
// (Retire).
#pragma once
#include <atomic>
#include <functional>
#include <memory>
#include <cstdint>
#include <string>
#include <vector>

#include "format.h"
#include "hash.hpp"
#include "log_writer.hpp"

namespace gl {

class Bitmap {
 public:
  void Resize(size_t bits) { words_.assign((bits + 63) / 64, 0); }
  void Grow(size_t bits) { words_.resize((bits + 63) / 64, 0); }  // keeps the bits it has
  bool Get(size_t i) const { return (i >> 6) < words_.size() && ((words_[i >> 6] >> (i & 63)) & 1); }
  void Set(size_t i) { words_[i >> 6] |= uint64_t(1) << (i & 63); }
  void SetAll() { for (auto& w : words_) w = ~uint64_t(0); }
  void Clear() { for (auto& w : words_) w = 0; }
  void Swap(Bitmap& o) { words_.swap(o.words_); }
  void OrWith(const Bitmap& o) { for (size_t i = 0; i < words_.size(); i++) words_[i] |= o.word(i); }
  void AndNot(const Bitmap& o) { for (size_t i = 0; i < words_.size(); i++) words_[i] &= ~o.word(i); }
  size_t words() const { return words_.size(); }
  uint64_t word(size_t i) const { return i < words_.size() ? words_[i] : 0; }
  void clear_word(size_t i) { words_[i] = 0; }
  template <typename F> void ForEach(size_t bits, F f) const {
    for (size_t w = 0; w < words_.size(); w++) {
      uint64_t v = words_[w];
      while (v) {
        size_t i = w * 64 + static_cast<size_t>(__builtin_ctzll(v));
        v &= v - 1;
        if (i < bits) f(i);
      }
    }
  }
 private:
  std::vector<uint64_t> words_;
};

// Makes the log durable up to every operation applied so far (the
// checkpoint's write-ahead rule for pages it has just copied).
using DurableWait = std::function<void()>;

// The pages a checkpoint copies before writing them (Shard::WritePages), one
// chunk at a time. One buffer serves every file of one checkpoint and lives as
// long as that checkpoint; it is allocated at its first use and never
// zero-filled (a page is copied in before it is written out), so a checkpoint
// touches its memory once instead of zeroing a fresh chunk per file.
class WriteBackBuffer {
 public:
  uint8_t* get();

 private:
  std::unique_ptr<uint8_t[]> bytes_;
};

class Shard {
 public:
  Shard(const std::string& dir, uint32_t shard, const Manifest& m);
  ~Shard();
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;

  static void Create(const std::string& dir, uint32_t shard, const Manifest& m);

  // ---- accounts
  AccountRecord* Rec(uint32_t slot) { return reinterpret_cast<AccountRecord*>(data_ + uint64_t(slot) * kAccountSize); }
  bool Valid(uint32_t slot);  // CRC, version and self-slot all check out
  void Seal(uint32_t slot);   // recompute CRC and mark the page for the next checkpoint
  uint32_t number() const { return number_; }
  uint32_t count() const { return count_; }
  uint32_t capacity() const { return capacity_; }
  // Room for one more account: kOk (the file grown if it had to be),
  // kCapacityExceeded at the hard limit, or kIoError (*detail says why: a full
  // disk) with nothing changed.
  Status Room(std::string* detail);
  // Allocates the next slot as a new account; the caller has made Room.
  uint32_t Create(const uint8_t* key, uint32_t hash, uint32_t pos, uint64_t lsn);

  // ---- index
  // Slot of `key`, or -1 with *pos set to the empty entry where it would go.
  int64_t Find(const uint8_t* key, uint32_t hash, uint32_t* pos);
  bool LoadIndex(const Manifest& m);  // header check only: O(1)
  // A guess at the key's record: the first entry of its bucket (unverified).
  // Batches load these ahead of use; a wrong guess only costs a cache miss.
  const AccountRecord* Guess(uint32_t hash) const {
    // (the current table only: during a rehash an older key may be in the old one)
    const IndexEntry e = entries_[BucketOf(hash, index_mask_)];
    return e.slot_plus_1 != 0 && e.slot_plus_1 <= capacity_
               ? reinterpret_cast<const AccountRecord*>(data_ + uint64_t(e.slot_plus_1 - 1) * kAccountSize)
               : nullptr;
  }
  void RebuildIndex();                // from the account file
  // The index is a crashed background checkpoint's (one epoch ahead): valid
  // for replay, never for a clean open.
  bool index_ahead() const { return index_ahead_; }
  uint32_t index_rebuilds() const { return index_rebuilds_.load(std::memory_order_relaxed); }
  uint32_t index_capacity() const { return index_mask_ + 1; }
  uint32_t index_resizes() const { return index_resizes_; }
  bool rehashing() const { return old_entries_ != nullptr; }
  // The readAhead option, false: the account and index mappings are advised
  // MADV_RANDOM, so a fault reads its own page and no read-ahead around it.
  // Accounts and index entries are reached by hash: when the files are larger
  // than memory, read-ahead only evicts pages that are in use (bench/memory.mjs,
  // a ledger twice a memory limit). When they fit, the default is faster (a
  // page the give-back returned comes back with its neighbours). Growth gives
  // new pages the same advice; an index rebuild, a scan in file order, runs
  // with the default.
  void SetRandomReads(bool on);
  // Moves the rest of the old table (foreground checkpoints: a table written
  // whole, in one layout).
  void FinishRehash();

  // ---- logs
  LogWriter& log(uint64_t epoch) { return *logs_[epoch & 1]; }
  const LogWriter& log(uint64_t epoch) const { return *logs_[epoch & 1]; }
  // Recovery: copies one replayed record into its slot (and its key into the
  // index when the index is valid); throws CORRUPTION when the index disagrees.
  void Apply(const WalRecord& r, uint64_t offset, const std::string& file, bool index_valid);

  // ---- checkpoint
  bool has_dirty() const { return any_dirty_; }
  // The hand-over: the dirty pages become the checkpoint's; the live dirty
  // sets start empty.
  void Capture();
  // Writes the captured account pages back and fdatasyncs the file. `wait`
  // enforces the write-ahead rule for pages changed after the hand-over.
  // `buf` is the checkpoint's copy buffer (WriteBackBuffer).
  void WriteBackData(const DurableWait& wait, WriteBackBuffer& buf);
  // Captured index pages, the page-CRC table and a header naming `next`.
  void WriteIndex(const Manifest& next, const DurableWait& wait, WriteBackBuffer& buf);
  uint32_t ImageSlots();  // non-empty slots in captured pages (wal:false journal size)
  template <typename F> void ForEachCapturedSlot(F f) {
    ckpt_data_.ForEach(ckpt_data_pages_, [&](size_t page) {
      uint32_t first = static_cast<uint32_t>(page * (kPageSize / kAccountSize));
      for (uint32_t s = first; s < first + kPageSize / kAccountSize && s < ckpt_count_; s++) f(s);
    });
  }
  // After the commit (JS thread): the pages the previous checkpoint wrote back
  // and this one did not capture (unchanged for a whole checkpoint period) are
  // the ones to give back.
  void CheckpointDone();
  // The ledger is idle: what the last checkpoint wrote back can go now, no
  // later checkpoint will come to give it its second look.
  void ReleaseWritten();
  // Gives back up to `budget` written-back pages not changed since; returns
  // the pages looked at (0: nothing left).
  size_t Release(size_t budget);

 private:
  // Probes one table: the slot, -1 (*pos = the empty entry where the key would
  // go) or kDamagedIndex (a page failed its CRC, or the table is full).
  int64_t Probe(IndexEntry* entries, uint32_t mask, Bitmap* verified, const uint32_t* crcs, const uint8_t* key,
                uint32_t hash, uint32_t* pos);
  bool VerifyIndexPage(const IndexEntry* entries, uint32_t page, const uint32_t* crcs, Bitmap* verified);
  // After a key was put into the current table: a rehash step, or the start of one.
  void Inserted();
  void StartRehash();
  void RehashStep(uint32_t positions);
  void EndRehash();
  // Makes `bytes` of anonymous memory the current table (zeroed, all verified).
  bool NewTable(uint32_t capacity);
  // Unmaps an anonymous table (or gives back the private pages of the file's
  // table) now, or after the running checkpoint when it copies from it.
  void Retire(IndexEntry* entries, uint8_t* map, size_t bytes);
  void DropRetired();
  void GrowData(uint32_t to);
  // Replay: the file large enough for `slot`, by the same steps as live growth.
  void GrowFor(uint32_t slot);
  void WritePages(int fd, const uint8_t* base, const Bitmap& pages, size_t page_count, uint64_t file_offset,
                  uint64_t file_bytes, const std::string& name, const DurableWait& wait,
                  uint32_t* page_crcs, WriteBackBuffer& buf);

  std::string dir_;
  uint32_t number_;
  uint32_t capacity_;
  uint32_t seed_;
  uint32_t count_ = 0;
  std::atomic<uint32_t> index_rebuilds_{0};

  int data_fd_ = -1;
  uint8_t* data_ = nullptr;  // start of the reserved address space; the file is mapped at its start
  bool random_reads_ = false;  // SetRandomReads
  size_t data_mapped_ = 0;   // bytes of the file mapped (whole pages)
  size_t data_pages_ = 0;
  Bitmap dirty_data_;
  bool any_dirty_ = false;

  int index_fd_ = -1;
  uint8_t* index_map_ = nullptr;
  uint64_t index_bytes_ = 0;
  IndexHeader* index_header_ = nullptr;
  uint32_t* page_crcs_ = nullptr;  // the mapping's table: checks pages never touched since open
  IndexEntry* file_entries_ = nullptr;  // the entries of the file's mapping
  // The current table: the file's mapping, or (after a resize or a rebuild to
  // another capacity) anonymous memory, table_map_.
  IndexEntry* entries_ = nullptr;
  uint32_t index_mask_ = 0;
  uint32_t index_pages_ = 0;
  uint8_t* table_map_ = nullptr;
  size_t table_bytes_ = 0;
  bool index_ahead_ = false;
  Bitmap index_verified_;  // pages whose CRC has been checked since open
  Bitmap index_dirty_;
  uint32_t index_resizes_ = 0;
  // The table being drained by a rehash (null: none), and the next position to move.
  IndexEntry* old_entries_ = nullptr;
  uint32_t old_mask_ = 0;
  uint8_t* old_map_ = nullptr;
  size_t old_bytes_ = 0;
  Bitmap old_verified_;
  uint32_t rehash_pos_ = 0;
  // Capacity the index file is laid out for (the header's at open; the
  // checkpoint thread changes it when it writes a resized table).
  uint32_t file_capacity_ = 0;
  struct Retired {
    IndexEntry* entries;
    uint8_t* map;  // null: the file's mapping (its private pages are given back)
    size_t bytes;
  };
  std::vector<Retired> retired_;

  // The checkpoint's: pages captured at the hand-over, the account count then,
  // the rebuild count then, and the page-CRC table as the file holds it.
  Bitmap ckpt_data_, ckpt_index_;
  uint32_t ckpt_count_ = 0;
  uint32_t ckpt_rebuilds_ = 0;
  size_t ckpt_data_pages_ = 0;
  uint64_t ckpt_data_bytes_ = 0;
  // The table the checkpoint copies index pages from (null: the index is not
  // written, a rehash was running at the hand-over), its capacity and pages.
  const IndexEntry* ckpt_entries_ = nullptr;
  uint32_t ckpt_index_capacity_ = 0;
  uint32_t ckpt_index_pages_ = 0;
  std::vector<uint32_t> file_crcs_;
  // Pages the last committed checkpoint wrote back. They get a second chance:
  // a page written again by the next checkpoint is hot and stays (giving it
  // back would only cost a fault and a copy on its next change); one the next
  // checkpoint did not capture moves to release_*.
  Bitmap written_data_, written_index_;
  bool written_pending_ = false;
  // Pages to give back: written back, unchanged since.
  Bitmap release_data_, release_index_;
  size_t release_cursor_ = 0;
  bool release_pending_ = false;

  std::unique_ptr<LogWriter> logs_[kWalGenerations];
};

}  // namespace gl
