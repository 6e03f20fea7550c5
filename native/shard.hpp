// One shard: its account file (private mapping), its index (private mapping,
// pages verified on first touch) and its write-ahead log. Log records are
// staged in memory during a call and written with one pwrite per shard before
// the call returns: from then on they are in the kernel's page cache and
// survive kill -9.
//
// Why a private mapping for the account file: the kernel may write dirty
// MAP_SHARED pages back whenever it likes, before the log records describing
// them are durable. Private pages never reach the file by themselves; the
// checkpoint writes them back after the log is synced.
#pragma once
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "format.h"
#include "hash.hpp"

namespace gl {

class Bitmap {
 public:
  void Resize(size_t bits) { words_.assign((bits + 63) / 64, 0); }
  bool Get(size_t i) const { return (words_[i >> 6] >> (i & 63)) & 1; }
  void Set(size_t i) { words_[i >> 6] |= uint64_t(1) << (i & 63); }
  void SetAll() { for (auto& w : words_) w = ~uint64_t(0); }
  void Clear() { for (auto& w : words_) w = 0; }
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

struct WalScan {
  uint64_t valid_end = 0;       // byte offset after the last record kept
  uint64_t dropped_bytes = 0;   // damaged/garbage bytes after valid_end
  uint64_t records = 0;         // valid records after the header
  uint64_t max_lsn = 0;
};

class Shard {
 public:
  Shard(const std::string& dir, uint32_t index, const Manifest& m);
  ~Shard();
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;

  static void Create(const std::string& dir, uint32_t index, const Manifest& m);

  // ---- accounts
  AccountRecord* Rec(uint32_t slot) { return reinterpret_cast<AccountRecord*>(data_ + uint64_t(slot) * kAccountSize); }
  bool Valid(uint32_t slot);  // CRC, version and self-slot all check out
  void Seal(uint32_t slot);   // recompute CRC and mark the page for the next checkpoint
  uint32_t index() const { return index_; }
  uint32_t count() const { return count_; }
  uint32_t capacity() const { return capacity_; }
  // Allocates the next slot as a new account; the caller has checked capacity.
  uint32_t Create(const uint8_t* key, uint32_t hash, uint32_t pos, uint64_t lsn);

  // ---- index
  // Slot of `key`, or -1 with *pos set to the empty entry where it would go.
  int64_t Find(const uint8_t* key, uint32_t hash, uint32_t* pos);
  bool LoadIndex(const Manifest& m);  // header check only: O(1)
  // A guess at the key's record: the first entry of its bucket (unverified).
  // Batches load these ahead of use; a wrong guess only costs a cache miss.
  const AccountRecord* Guess(uint32_t hash) const {
    const IndexEntry e = entries_[BucketOf(hash, index_mask_)];
    return e.slot_plus_1 != 0 && e.slot_plus_1 <= capacity_
               ? reinterpret_cast<const AccountRecord*>(data_ + uint64_t(e.slot_plus_1 - 1) * kAccountSize)
               : nullptr;
  }
  void RebuildIndex();                // from the account file
  uint32_t index_rebuilds() const { return index_rebuilds_; }

  // ---- log
  // Ensures file room for `n` more records (may grow the file with blocks
  // allocated now); throws IO_ERROR, before anything has changed.
  void WalReserve(uint32_t n);
  WalRecord* WalNext();  // next staged record; the caller fills and seals it
  int WalFlush();        // writes the staged records; returns errno (0: done)
  size_t wal_staged() const { return staged_; }
  void WalResetTo(uint64_t epoch, uint32_t window, uint64_t timestamp);
  // True when the file is exactly a valid header of `epoch`; then appends may start after it.
  bool WalHeaderOnly(uint64_t epoch);
  uint64_t wal_bytes() const { return wal_pos_ + staged_; }
  std::atomic<uint64_t> wal_last_lsn{0};  // highest LSN written to the kernel (read by the syncer)
  uint64_t staged_lsn = 0;                // highest LSN staged (JS thread)
  int wal_fd() const { return wal_fd_; }

  // Recovery, in three passes over the mapped log: validate and find the cut
  // of this file, count the legs of each transaction (all shards together
  // decide the global cut), then apply every record below the global cut.
  // `repair`: keep the valid prefix even when more than a window of valid
  // records follows the damage (never the default: it drops synced records).
  WalScan ScanWal(uint64_t epoch, uint64_t checkpoint_lsn, uint32_t fallback_window, bool repair);
  uint64_t FirstLsn(uint32_t* type) const;  // 0 when the file holds no records
  void CountWal(uint64_t base, std::vector<uint32_t>& counts, std::vector<uint32_t>& legs) const;
  uint64_t ApplyWal(uint64_t cut_lsn, bool index_valid, uint64_t* dropped_bytes);
  void CloseWalScan();

  // ---- checkpoint
  uint32_t ImageSlots();  // non-empty slots in dirty pages (wal:false journal size)
  template <typename F> void ForEachDirtySlot(F f) {
    dirty_data_.ForEach(data_pages_, [&](size_t page) {
      uint32_t first = static_cast<uint32_t>(page * (kPageSize / kAccountSize));
      for (uint32_t s = first; s < first + kPageSize / kAccountSize && s < count_; s++) f(s);
    });
  }
  void WriteBackData();     // pwrite dirty pages, fdatasync
  void WriteIndex(const Manifest& next);  // dirty pages, CRC table, header, fdatasync
  void ClearDirty();
  bool has_dirty() const { return any_dirty_; }

 private:
  bool VerifyIndexPage(uint32_t page);
  void ResetIndexVerification(bool verified);

  std::string dir_;
  uint32_t index_;
  uint32_t capacity_;
  uint32_t seed_;
  uint32_t count_ = 0;
  uint32_t index_rebuilds_ = 0;

  int data_fd_ = -1;
  uint8_t* data_ = nullptr;
  size_t data_pages_ = 0;
  Bitmap dirty_data_;
  bool any_dirty_ = false;

  int index_fd_ = -1;
  uint8_t* index_map_ = nullptr;
  uint64_t index_bytes_ = 0;
  IndexHeader* index_header_ = nullptr;
  uint32_t* page_crcs_ = nullptr;
  IndexEntry* entries_ = nullptr;
  uint32_t index_mask_ = 0;
  uint32_t index_pages_ = 0;
  Bitmap index_verified_;  // pages whose CRC has been checked since open
  Bitmap index_dirty_;

  int wal_fd_ = -1;
  uint64_t wal_pos_ = 0;    // bytes of the file written (header included)
  uint64_t wal_bound_ = 0;  // the file is allocated at least this far (chunk boundaries from 0)
  std::vector<uint8_t> stage_;
  size_t staged_ = 0;
  const uint8_t* scan_map_ = nullptr;
  uint64_t scan_len_ = 0;
  uint64_t scan_end_ = 0;
};

uint32_t WalCrc(const WalRecord* r);
void SealWal(WalRecord* r);

}  // namespace gl
