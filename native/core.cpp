#include "core.hpp"

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <system_error>
#include <fcntl.h>
#include <csignal>
#include <cstdlib>
#include <sys/file.h>
#include <unistd.h>

#include "crc32c.hpp"
#include "hash.hpp"
#include "io.hpp"

namespace gl {
namespace {

// Past this much log since the last checkpoint, the next write checkpoints
// first: it bounds recovery after a crash (about a second of replay).
constexpr uint64_t kAutoCheckpointBytes = 512ull << 20;
// Threads waiting on log fsyncs in one group commit.
constexpr size_t kSyncThreads = 4;
// Staged log bytes at which a batch writes them out before going on.
constexpr size_t kStageFlush = 1 << 20;

uint64_t WallMs() {
  struct timespec ts;
  ::clock_gettime(CLOCK_REALTIME_COARSE, &ts);
  return uint64_t(ts.tv_sec) * 1000 + uint64_t(ts.tv_nsec) / 1000000;
}
uint64_t MonoMs() {
  struct timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return uint64_t(ts.tv_sec) * 1000 + uint64_t(ts.tv_nsec) / 1000000;
}
// Start time of a process in clock ticks since boot, 0 when it does not exist.
unsigned long long ProcessStart(long pid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%ld/stat", pid);
  FILE* f = std::fopen(path, "r");
  if (!f) return 0;
  char line[1024];
  size_t n = std::fread(line, 1, sizeof line - 1, f);
  std::fclose(f);
  line[n] = 0;
  // Field 2 is "(comm)" and may hold spaces: count fields after the last ')'.
  const char* p = std::strrchr(line, ')');
  if (!p) return 0;
  int field = 2;
  for (const char* q = p + 1; *q; q++) {
    if (*q != ' ') continue;
    if (++field == 22) return std::strtoull(q + 1, nullptr, 10);
  }
  return 0;
}

uint64_t Le64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

}  // namespace

Core::Core(const std::string& dir) : dir_(dir) {
  Hooks::Load();
  lock_fd_ = OpenFile(dir + "/LOCK", O_RDWR | O_CREAT);
  // flock belongs to the open file description: a second open in this process
  // conflicts too, and the kernel drops the lock when the process dies.
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    ::close(lock_fd_);
    lock_fd_ = -1;
    if (err == EWOULDBLOCK) Fail(kLocked, "ledger directory is locked by another open ledger: " + dir);
    FailErrno("lock " + dir, err);
  }
  // The pure-TypeScript engine cannot flock; it records "pid starttime" here
  // instead, and so do we, so that each engine sees the other's hold. The
  // start time (field 22 of /proc/<pid>/stat) tells a live holder from an
  // unrelated process that was given a dead holder's pid.
  char buf[64] = {};
  ssize_t n = ::pread(lock_fd_, buf, sizeof buf - 1, 0);
  long pid = 0;
  unsigned long long start = 0;
  if (n > 0) std::sscanf(buf, "%ld %llu", &pid, &start);
  // Our own pid counts too: a native core always clears LOCK when it lets go,
  // so our pid here means a TypeScript-engine ledger of this process holds it.
  if (pid > 0 && start != 0 && ProcessStart(pid) == start) {
    ::close(lock_fd_);
    lock_fd_ = -1;
    Fail(kLocked, "ledger directory is locked by process " + std::to_string(pid) + ": " + dir);
  }
  std::string me = std::to_string(::getpid()) + " " + std::to_string(ProcessStart(::getpid())) + "\n";
  if (::ftruncate(lock_fd_, 0) == 0) WriteAt(lock_fd_, me.data(), me.size(), 0, "LOCK");
}

Core::~Core() {
  StopSyncer();
  shards_.clear();
  ReleaseLock();
}

void Core::Create(const Manifest& m) {
  for (uint32_t i = 0; i < m.shards; i++) Shard::Create(dir_, i, m);
  SyncDir(dir_);
  Manifest sealed = m;
  sealed.crc = Crc32c(&sealed, 60);
  ReplaceFile(dir_, "MANIFEST", &sealed, sizeof sealed);
}

std::vector<bool> Core::Open(const Manifest& m, const CoreOptions& o) {
  manifest_ = m;
  opts_ = o;
  std::vector<bool> valid;
  for (uint32_t i = 0; i < m.shards; i++) {
    shards_.push_back(std::make_unique<Shard>(dir_, i, m));
    valid.push_back(shards_.back()->LoadIndex(m));
  }
  lsn_ = published_lsn_ = staged_lsn_ = m.checkpoint_lsn;
  durable_lsn_.store(lsn_);
  appended_lsn_.store(lsn_);
  return valid;
}

bool Core::LogsHeaderOnly() {
  bool all = true;
  for (auto& s : shards_) all = s->WalHeaderOnly(manifest_.epoch) && all;
  return all;
}

ReplayResult Core::Replay(const std::vector<bool>& index_valid, bool repair) {
  ReplayResult out;
  uint64_t total = 0;
  std::vector<WalScan> scans;
  for (auto& s : shards_) {
    scans.push_back(s->ScanWal(manifest_.epoch, manifest_.checkpoint_lsn, Window(), repair));
    total += scans.back().records;
    out.dropped_bytes += scans.back().dropped_bytes;
  }
  // Transactions must follow the checkpoint without a gap, each with all of
  // its legs; the first one that does not is where every shard is cut. A
  // wal:false journal is one transaction at the LSN the checkpoint reached.
  uint64_t base = manifest_.checkpoint_lsn + 1;
  uint64_t first = UINT64_MAX;
  uint32_t first_type = 0;
  for (auto& s : shards_) {
    uint32_t type = 0;
    uint64_t l = s->FirstLsn(&type);
    if (l && l < first) first = l, first_type = type;
  }
  if (first != UINT64_MAX && first_type == kWalImage) base = first;
  std::vector<uint32_t> counts(total + 1, 0), legs(total + 1, 0);
  for (auto& s : shards_) s->CountWal(base, counts, legs);
  uint64_t cut = base;
  while (cut - base < counts.size() && legs[cut - base] != 0 && counts[cut - base] == legs[cut - base]) cut++;
  for (size_t i = 0; i < shards_.size(); i++) {
    uint64_t applied = shards_[i]->ApplyWal(cut, index_valid[i], &out.dropped_bytes);
    // What we replayed may still be only in the page cache (the crash was a
    // kill, not a power cut). It must be durable before the checkpoint that
    // follows writes shard pages derived from it.
    if (applied > 0) DataSyncOrThrow(shards_[i]->wal_fd(), FileName("shard", shards_[i]->index(), "wal"));
    out.records += applied;
  }
  // Nothing applied (the cut is at the first transaction, which may be an
  // unfinished image journal at a later LSN): the state is the checkpoint's.
  out.last_lsn = cut > base ? cut - 1 : manifest_.checkpoint_lsn;
  lsn_ = out.last_lsn;
  published_lsn_ = staged_lsn_ = lsn_;
  durable_lsn_.store(lsn_);
  appended_lsn_.store(lsn_);
  return out;
}

void Core::Start() {
  started_ = true;
  if (!opts_.wal) return;
  syncer_ = std::thread([this] { SyncerLoop(); });
}

// ------------------------------------------------------------------ syncing

void Core::Kick() {
  {
    std::lock_guard<std::mutex> g(kick_mu_);
    kicked_ = true;
  }
  kick_cv_.notify_one();
}

bool Core::RoundLocked() {
  if (failed_.load()) return false;
  uint64_t records = appended_records_.load(std::memory_order_acquire);
  uint64_t lsn = appended_lsn_.load(std::memory_order_acquire);
  uint64_t durable = durable_lsn_.load(std::memory_order_acquire);
  if (lsn > durable) {
    std::vector<Shard*> dirty;
    for (auto& s : shards_)
      if (s->wal_last_lsn.load(std::memory_order_acquire) > durable) dirty.push_back(s.get());
    // Start write-back of every log first, then wait on them from a few
    // threads: the disk works on all logs at once (half the time of one
    // fdatasync after another over 16 logs, measured).
    for (Shard* s : dirty) ::sync_file_range(s->wal_fd(), 0, 0, SYNC_FILE_RANGE_WRITE);
    std::vector<int> errs(dirty.size(), 0);
    auto work = [&](size_t first, size_t step) {
      for (size_t i = first; i < dirty.size(); i += step) errs[i] = DataSync(dirty[i]->wal_fd());
    };
    size_t threads = std::min<size_t>(kSyncThreads, dirty.size());
    std::vector<std::thread> helpers;
    for (size_t t = 1; t < threads; t++) {
      try {
        helpers.emplace_back(work, t, threads);
      } catch (const std::system_error&) {
        work(t, threads);  // no thread to be had: do its share here
      }
    }
    work(0, std::max<size_t>(threads, 1));
    for (auto& h : helpers) h.join();
    for (size_t i = 0; i < dirty.size(); i++) {
      if (errs[i] == 0) continue;
      // Never retried: after a failed fsync the kernel may have dropped the
      // dirty pages, so a later success would prove nothing.
      failure_ = "fsync " + FileName("shard", dirty[i]->index(), "wal") + ": " + std::strerror(errs[i]);
      failed_.store(true);
      break;
    }
    if (!failed_.load()) {
      durable_records_.store(records, std::memory_order_release);
      durable_lsn_.store(lsn, std::memory_order_release);
      fsyncs_.fetch_add(1);
    }
  } else {
    durable_records_.store(std::max(durable_records_.load(), records), std::memory_order_release);
  }
  { std::lock_guard<std::mutex> g(kick_mu_); }
  durable_cv_.notify_all();
  return !failed_.load();
}

void Core::SyncerLoop() {
  const auto tick = std::chrono::milliseconds(std::max<uint32_t>(1, std::min<uint32_t>(100, opts_.sync_interval_ms / 10)));
  for (;;) {
    bool due;
    {
      std::unique_lock<std::mutex> lk(kick_mu_);
      kick_cv_.wait_for(lk, tick, [&] { return stop_ || kicked_; });
      if (stop_) return;
      due = kicked_;
      kicked_ = false;
    }
    if (!due && appended_lsn_.load() > durable_lsn_.load() &&
        MonoMs() - first_unsynced_ms_.load() >= opts_.sync_interval_ms)
      due = true;
    if (!due) continue;
    std::lock_guard<std::mutex> g(sync_mu_);
    if (closed_) return;
    RoundLocked();
  }
}

void Core::StopSyncer() {
  {
    std::lock_guard<std::mutex> g(kick_mu_);
    stop_ = true;
  }
  kick_cv_.notify_all();
  durable_cv_.notify_all();
  if (syncer_.joinable()) syncer_.join();
}

void Core::SyncTo(uint64_t target) {
  std::lock_guard<std::mutex> g(sync_mu_);
  if (failed_.load()) Fail(kIoError, "ledger is read-only after a failed fsync: " + failure_);
  if (closed_) return;  // close checkpointed everything it had
  if (durable_lsn_.load() >= target) return;
  if (!RoundLocked()) Fail(kIoError, "ledger is read-only after a failed fsync: " + failure_);
}

// ------------------------------------------------------------------ operations

Shard& Core::ShardFor(const uint8_t* key, uint32_t* hash) const {
  *hash = KeyHash(key, manifest_.seed);
  return *shards_[ShardOf(*hash, manifest_.shards)];
}

Status Core::Corrupt(uint32_t shard, uint32_t slot) {
  detail_ = "account record failed its checksum: " + FileName("shard", shard, "bin") + " slot " + std::to_string(slot);
  return kCorruption;
}

Status Core::Admit(Shard& a, Shard* b) {
  if (closed_) return kClosed;
  if (failed_.load()) return kIoError;
  if (!opts_.wal) return kOk;
  now_ms_ = WallMs();
  try {
    if (wal_total_ > kAutoCheckpointBytes) Checkpoint(false);
    uint32_t n = 2;
    if (b && b != &a) {
      a.WalReserve(1);
      b->WalReserve(1);
    } else {
      a.WalReserve(b ? 2 : 1);
      n = b ? 2 : 1;
    }
    uint64_t durable = durable_records_.load(std::memory_order_acquire);
    if (records_ == durable) first_unsynced_ms_.store(MonoMs(), std::memory_order_relaxed);
    if (records_ != durable && records_ + n - durable > Window()) {
      // The disk is a whole window behind: hand the syncer what is staged and
      // wait for it.
      if (!FlushLogs()) return kIoError;
      Kick();
      std::unique_lock<std::mutex> lk(kick_mu_);
      durable_cv_.wait(lk, [&] {
        uint64_t d = durable_records_.load(std::memory_order_acquire);
        return failed_.load() || stop_ || records_ == d || records_ + n - d <= Window();
      });
      if (failed_.load()) return kIoError;
    }
  } catch (const Failure& f) {
    detail_ = f.message;
    return f.code;
  }
  return kOk;
}

void Core::AppendWal(Shard& s, uint32_t type, uint32_t slot, uint64_t lsn, uint32_t legs, uint32_t leg,
                     uint64_t amount) {
  if (s.wal_staged() == 0) staged_shards_.push_back(&s);
  WalRecord* r = s.WalNext();
  r->magic = kWalMagic;
  r->timestamp = now_ms_;
  r->type = type;
  std::memcpy(&r->account, s.Rec(slot), kAccountSize);
  r->lsn = lsn;
  r->epoch = manifest_.epoch;
  r->shard = s.index();
  r->slot = slot;
  r->legs = legs;
  r->leg = leg;
  r->amount = amount;
  r->window = 0;
  SealWal(r);
  s.staged_lsn = lsn;
  wal_total_ += kWalRecordSize;
  staged_bytes_ += kWalRecordSize;
  records_++;
}

bool Core::FlushLogs() {
  for (Shard* s : staged_shards_) {
    if (int err = s->WalFlush(); err != 0) {
      // The records are not in the kernel. The operations they log were
      // applied in memory already: the ledger cannot take them back, so it
      // stops (read-only) and their callers are told IO_ERROR.
      failure_ = "write " + FileName("shard", s->index(), "wal") + ": " + std::strerror(err);
      detail_ = failure_;
      failed_.store(true);
      write_failures_++;
      staged_shards_.clear();
      staged_bytes_ = 0;
      return false;
    }
    s->wal_last_lsn.store(s->staged_lsn, std::memory_order_relaxed);
  }
  staged_shards_.clear();
  staged_bytes_ = 0;
  flushes_++;
  if (staged_lsn_ > published_lsn_) {
    published_lsn_ = staged_lsn_;
    appended_records_.store(records_, std::memory_order_relaxed);
    appended_lsn_.store(published_lsn_, std::memory_order_release);
    if (records_ - kicked_at_ >= opts_.sync_every) {
      kicked_at_ = records_;
      Kick();
    }
  }
  return true;
}

Status Core::Logged(uint64_t lsn) {
  staged_lsn_ = lsn;
  if (batching_) return kOk;  // the batch writes its records once, at the end
  return FlushLogs() ? kOk : kIoError;
}

// Whether `key` can receive `amount`: its slot in *found (-1: to be created at
// index entry *pos), or the reason it cannot (CORRUPTION, OVERFLOW, CAPACITY_EXCEEDED).
Status Core::CheckCredit(Shard& s, const uint8_t* key, uint32_t hash, uint64_t amount, int64_t* found, uint32_t* pos) {
  *found = s.Find(key, hash, pos);
  if (*found >= 0) {
    uint32_t slot = static_cast<uint32_t>(*found);
    if (!s.Valid(slot)) return Corrupt(s.index(), slot);
    if (s.Rec(slot)->lamports > UINT64_MAX - amount) return kOverflow;
  } else if (s.count() >= s.capacity()) {
    return kCapacityExceeded;
  }
  return kOk;
}

Status Core::Mint(const uint8_t* key, uint64_t amount) {
  if (amount == 0) return kInvalidAmount;
  uint32_t h, pos;
  Shard& s = ShardFor(key, &h);
  int64_t found;
  if (Status st = CheckCredit(s, key, h, amount, &found, &pos); st != kOk) return st;
  if (Status st = Admit(s, nullptr); st != kOk) return st;
  uint64_t lsn = ++lsn_;
  uint32_t slot = found >= 0 ? static_cast<uint32_t>(found) : s.Create(key, h, pos, lsn);
  AccountRecord* r = s.Rec(slot);
  r->lamports += amount;
  r->lsn = lsn;
  s.Seal(slot);
  if (!opts_.wal) return kOk;
  AppendWal(s, kWalMint, slot, lsn, 1, 0, amount);
  return Logged(lsn);
}

Status Core::Transfer(const uint8_t* from, const uint8_t* to, uint64_t amount) {
  if (amount == 0) return kInvalidAmount;
  if (std::memcmp(from, to, 32) == 0) return kSameAccount;
  uint32_t hf, ht, pos;
  Shard& sf = ShardFor(from, &hf);
  int64_t f = sf.Find(from, hf, &pos);
  if (f < 0) return kAccountNotFound;
  if (!sf.Valid(static_cast<uint32_t>(f))) return Corrupt(sf.index(), static_cast<uint32_t>(f));
  if (sf.Rec(static_cast<uint32_t>(f))->lamports < amount) return kInsufficientFunds;
  Shard& st = ShardFor(to, &ht);
  int64_t t;
  if (Status s = CheckCredit(st, to, ht, amount, &t, &pos); s != kOk) return s;
  if (Status s = Admit(sf, &st); s != kOk) return s;
  uint64_t lsn = ++lsn_;
  uint32_t from_slot = static_cast<uint32_t>(f);
  uint32_t to_slot = t >= 0 ? static_cast<uint32_t>(t) : st.Create(to, ht, pos, lsn);
  AccountRecord* a = sf.Rec(from_slot);
  a->lamports -= amount;
  a->lsn = lsn;
  sf.Seal(from_slot);
  AccountRecord* b = st.Rec(to_slot);
  b->lamports += amount;
  b->lsn = lsn;
  st.Seal(to_slot);
  if (!opts_.wal) return kOk;
  AppendWal(sf, kWalDebit, from_slot, lsn, 2, 0, amount);
  AppendWal(st, kWalCredit, to_slot, lsn, 2, 1, amount);
  return Logged(lsn);
}

Status Core::Get(const uint8_t* key, uint8_t* out) {
  uint32_t h, pos;
  Shard& s = ShardFor(key, &h);
  int64_t found = s.Find(key, h, &pos);
  if (found < 0) return kAccountNotFound;
  if (!s.Valid(static_cast<uint32_t>(found))) return Corrupt(s.index(), static_cast<uint32_t>(found));
  std::memcpy(out, s.Rec(static_cast<uint32_t>(found)), kAccountSize);
  return kOk;
}

// Batches run in groups: the group's index entries, then its records, are
// loaded back to back so that their cache and TLB misses overlap instead of
// each operation waiting for its own. With a million accounts nearly every
// lookup misses.
constexpr size_t kGroup = 16;

void Core::Warm(const uint8_t* const* keys, size_t n) {
  uint32_t hash[2 * kGroup];
  const Shard* shard[2 * kGroup];
  for (size_t i = 0; i < n; i++) shard[i] = &ShardFor(keys[i], &hash[i]);
  const AccountRecord* rec[2 * kGroup];
  for (size_t i = 0; i < n; i++) rec[i] = shard[i]->Guess(hash[i]);
  uint64_t sum = 0;
  for (size_t i = 0; i < n; i++)
    if (rec[i]) sum += rec[i]->lamports;
  warm_sink_ = sum;  // keeps the loads
}

// Runs `n` operations with their log records written together: once the
// staged records pass kStageFlush, and at the end, before the call returns.
template <typename Op>
void Core::RunBatch(size_t n, uint8_t* statuses, Op op) {
  now_ms_ = WallMs();
  batching_ = true;
  size_t flushed = 0;  // operations [0, flushed) have their records in the kernel
  auto lost = [&](size_t to) {
    for (size_t j = flushed; j < to; j++)
      if (statuses[j] == kOk) statuses[j] = kIoError;
  };
  for (size_t i = 0; i < n; i++) {
    uint64_t flushes = flushes_, failures = write_failures_;
    statuses[i] = op(i);
    if (write_failures_ != failures) {
      lost(i + 1);
      flushed = i + 1;
    } else if (flushes_ != flushes) {
      flushed = i;  // a flush ran before operation i staged anything
    }
    if (staged_bytes_ >= kStageFlush) {
      if (FlushLogs()) flushed = i + 1;
      else lost(i + 1), flushed = i + 1;
    }
  }
  batching_ = false;
  if (!FlushLogs()) lost(n);
}

void Core::MintBatch(const uint8_t* ops, size_t n, uint8_t* statuses) {
  const uint8_t* keys[kGroup];
  RunBatch(n, statuses, [&](size_t i) {
    if (i % kGroup == 0) {
      size_t m = std::min(kGroup, n - i);
      for (size_t j = 0; j < m; j++) keys[j] = ops + (i + j) * kMintOpSize;
      Warm(keys, m);
    }
    const uint8_t* op = ops + i * kMintOpSize;
    return Mint(op, Le64(op + 32));
  });
}

void Core::TransferBatch(const uint8_t* ops, size_t n, uint8_t* statuses) {
  const uint8_t* keys[2 * kGroup];
  RunBatch(n, statuses, [&](size_t i) {
    if (i % kGroup == 0) {
      size_t m = std::min(kGroup, n - i);
      for (size_t j = 0; j < m; j++) {
        keys[2 * j] = ops + (i + j) * kTransferOpSize;
        keys[2 * j + 1] = keys[2 * j] + 32;
      }
      Warm(keys, 2 * m);
    }
    const uint8_t* op = ops + i * kTransferOpSize;
    return Transfer(op, op + 32, Le64(op + 64));
  });
}

void Core::GetBatch(const uint8_t* keys, size_t n, uint8_t* out) {
  const uint8_t* group[kGroup];
  for (size_t i = 0; i < n; i++, keys += 32, out += kAccountSize) {
    if (i % kGroup == 0) {
      size_t m = std::min(kGroup, n - i);
      for (size_t j = 0; j < m; j++) group[j] = keys + j * 32;
      Warm(group, m);
    }
    Status st = Get(keys, out);
    if (st == kAccountNotFound) std::memset(out, 0, kAccountSize);
    else if (st != kOk) Fail(st, detail_);
  }
}

// ------------------------------------------------------------------ checkpoint

void Core::WriteImageJournal() {
  // wal:false has no log to repair a torn write-back with, so the checkpoint
  // logs the images it is about to write, as one transaction, first.
  uint32_t total = 0;
  for (auto& s : shards_) total += s->ImageSlots();
  if (total == 0) return;
  now_ms_ = WallMs();
  uint32_t leg = 0;
  for (auto& s : shards_) {
    uint32_t n = s->ImageSlots();
    if (n == 0) continue;
    s->WalReserve(n);
    s->ForEachDirtySlot([&](uint32_t slot) { AppendWal(*s, kWalImage, slot, lsn_, total, leg++, 0); });
  }
  if (!FlushLogs()) Fail(kIoError, failure_);
  for (auto& s : shards_)
    if (s->wal_last_lsn.load() != 0) DataSyncOrThrow(s->wal_fd(), FileName("shard", s->index(), "wal"));
}

void Core::Checkpoint(bool force) {
  std::lock_guard<std::mutex> g(sync_mu_);
  if (closed_) Fail(kClosed, "ledger is closed");
  if (failed_.load()) Fail(kIoError, "ledger is read-only after a failure: " + failure_);
  bool dirty = false;
  for (auto& s : shards_) dirty = dirty || s->has_dirty();
  if (!force && !dirty && lsn_ == manifest_.checkpoint_lsn) return;
  try {
    Manifest next = manifest_;
    next.epoch++;
    next.checkpoint_lsn = lsn_;
    next.crc = 0;
    // 1. The log first: every change about to reach the shard files must be
    //    durable in the log, so a torn write-back is repaired by replay.
    if (!FlushLogs()) Fail(kIoError, failure_);  // an auto-checkpoint may come mid-batch
    if (opts_.wal) {
      if (!RoundLocked()) Fail(kIoError, failure_);
    } else if (started_) {
      WriteImageJournal();
    }
    // Before start() the only changes are those replay copied from the log,
    // which Replay made durable: the log covers them already, in either mode.
    CrashPoint("checkpoint:after-wal-sync");
    for (auto& s : shards_) s->WriteBackData();
    CrashPoint("checkpoint:after-data-sync");
    for (auto& s : shards_) s->WriteIndex(next);
    CrashPoint("checkpoint:after-index");
    // 2. The commit point: the manifest names the new epoch, and records of
    //    the old one are never replayed again.
    next.crc = Crc32c(&next, 60);
    ReplaceFile(dir_, "MANIFEST", &next, sizeof next);
    manifest_ = next;
    CrashPoint("checkpoint:after-manifest");
    // 3. Empty the logs for the new epoch.
    uint64_t now = WallMs();
    for (auto& s : shards_) {
      s->WalResetTo(next.epoch, Window(), now);
      s->ClearDirty();
    }
    CrashPoint("checkpoint:after-wal-reset");
    wal_total_ = 0;
    published_lsn_ = lsn_;
    appended_records_.store(records_);
    durable_records_.store(records_);
    durable_lsn_.store(lsn_);
    appended_lsn_.store(lsn_);
  } catch (const Failure& f) {
    failure_ = f.message;
    failed_.store(true);
    throw;
  }
}

void Core::Close() {
  StopSyncer();
  std::lock_guard<std::mutex> g(sync_mu_);
  closed_ = true;
  shards_.clear();
  ReleaseLock();
}

void Core::ReleaseLock() {
  if (lock_fd_ < 0) return;
  if (::ftruncate(lock_fd_, 0) != 0) {
    // Only a hint for the TypeScript engine; the flock goes with the descriptor.
  }
  ::close(lock_fd_);
  lock_fd_ = -1;
}

uint64_t Core::wal_bytes() const {
  uint64_t n = 0;
  for (auto& s : shards_) n += s->wal_bytes();
  return n;
}

std::vector<ShardStats> Core::Stats() const {
  std::vector<ShardStats> out;
  for (auto& s : shards_) out.push_back({s->count(), s->capacity(), s->index_rebuilds()});
  return out;
}

}  // namespace gl
