#include "core.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "crc32c.hpp"
#include "hash.hpp"
#include "io.hpp"
#include "log_reader.hpp"

namespace gl {
namespace {

// Staged log bytes at which a batch writes them out before going on.
constexpr size_t kStageFlush = 1 << 20;
// How long one write call may wait for a background checkpoint that the log
// has outrun: up to 1 ms past twice checkpointEveryBytes since the last
// commit, up to 10 ms (the most any call may be held up) past four times.
constexpr uint32_t kThrottleMs = 1;
constexpr uint32_t kHardThrottleMs = 10;
// Written-back pages looked at per Maintain() call (well under a millisecond).
constexpr size_t kReleasePages = 1024;

uint64_t WallMs() {
  struct timespec ts;
  ::clock_gettime(CLOCK_REALTIME_COARSE, &ts);
  return uint64_t(ts.tv_sec) * 1000 + uint64_t(ts.tv_nsec) / 1000000;
}

uint64_t Le64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

}  // namespace

Core::Core(const std::string& dir) : dir_(dir) {
  Hooks::Load();
  lock_ = std::make_unique<DirLock>(dir);
}

Core::~Core() { Close(); }

void Core::Create(const Manifest& m) {
  for (uint32_t i = 0; i < m.shards; i++) Shard::Create(dir_, i, m);
  SyncDir(dir_);
  Manifest sealed = m;
  sealed.crc = Crc32c(&sealed, offsetof(Manifest, crc));
  ReplaceFile(dir_, "MANIFEST", &sealed, sizeof sealed);
}

std::vector<bool> Core::Open(const Manifest& m, const CoreOptions& o) {
  manifest_ = m;
  supply_ = GetSupply(m.supply);
  committed_lsn_.store(m.checkpoint_lsn);
  active_epoch_ = m.epoch;
  opts_ = o;
  std::vector<bool> valid;
  std::vector<LogWriter*> logs;
  for (uint32_t i = 0; i < m.shards; i++) {
    shards_.push_back(std::make_unique<Shard>(dir_, i, m));
    if (!o.read_ahead) shards_.back()->SetRandomReads(true);
    valid.push_back(shards_.back()->LoadIndex(m));
    for (uint32_t g = 0; g < kWalGenerations; g++) logs.push_back(&shards_.back()->log(g));
  }
  syncer_.Configure(std::move(logs), o.sync_every, o.sync_interval_ms);
  lsn_ = published_lsn_ = staged_lsn_ = m.checkpoint_lsn;
  applied_lsn_.store(lsn_);
  syncer_.Reset(lsn_, 0);
  return valid;
}

bool Core::LogsHeaderOnly() {
  bool all = true;
  for (auto& s : shards_) {
    all = s->log(manifest_.epoch).HeaderOnly(manifest_.epoch) && all;
    all = !s->log(manifest_.epoch + 1).HoldsRecordsOf(manifest_.epoch + 1) && !s->index_ahead() && all;
  }
  return all;
}

ReplayResult Core::Replay(const std::vector<bool>& index_valid, bool repair) {
  ReplayResult out;
  const uint64_t epoch = manifest_.epoch, checkpoint = manifest_.checkpoint_lsn;
  struct File {
    Shard* shard;
    LogWriter* log;
    std::unique_ptr<LogReader> reader;
    LogScan scan;
  };
  // Shard by shard, the generation of the manifest's epoch, then the next.
  std::vector<File> files;
  uint64_t total = 0, durable = 0;
  const File* proof = nullptr;
  for (auto& s : shards_) {
    for (uint64_t e = epoch; e <= epoch + 1; e++) {
      LogWriter& log = s->log(e);
      File f{s.get(), &log, std::make_unique<LogReader>(log.fd(), log.name()), {}};
      // Slots up to the hard limit: a power cut may have taken back a growth
      // of the account file that the log outlived; Apply grows it again.
      f.scan = f.reader->Scan(e, s->number(), checkpoint, kMaxAccountsPerShard);
      total += f.scan.records;
      out.dropped_bytes += f.scan.dropped_bytes;
      files.push_back(std::move(f));
    }
  }
  for (const File& f : files)
    if (f.scan.durable_lsn > durable) durable = f.scan.durable_lsn, proof = &f;
  // Transactions must follow the checkpoint without a gap, each with all of
  // its legs; the first one that does not is where every shard is cut. A
  // wal:false journal is one transaction at the LSN the checkpoint reached.
  uint64_t base = checkpoint + 1;
  uint64_t first = UINT64_MAX;
  uint32_t first_type = 0;
  for (const File& f : files)
    if (const WalRecord* r = f.reader->first(); r && r->lsn < first) first = r->lsn, first_type = r->type;
  if (first != UINT64_MAX && first_type == kWalImage) base = first;
  std::vector<uint32_t> counts(total + 1, 0), legs(total + 1, 0);
  for (const File& f : files)
    f.reader->ForEach([&](const WalRecord* r, uint64_t) {
      if (r->lsn < base || r->lsn - base >= counts.size()) return;
      size_t i = static_cast<size_t>(r->lsn - base);
      counts[i]++;
      if (legs[i] == 0) legs[i] = r->legs;
      else if (legs[i] != r->legs) legs[i] = UINT32_MAX;  // disagreeing legs: never complete
    });
  uint64_t cut = base;
  while (cut - base < counts.size() && legs[cut - base] != 0 && counts[cut - base] == legs[cut - base]) cut++;
  // Every LSN up to `durable` was on stable storage before some record that
  // survived was written: if the cut falls there, synced records are damaged
  // or missing. That is never a torn tail.
  if (cut <= durable && !repair) {
    std::string where;
    for (const File& f : files)
      if (f.scan.damaged) {
        where = f.reader->name() + ": damaged record at offset " + std::to_string(f.scan.prefix_end);
        break;
      }
    if (where.empty()) where = "log records of LSN " + std::to_string(cut) + " are missing";
    Fail(kCorruption, where + ", but " + proof->reader->name() + " at offset " + std::to_string(proof->scan.durable_at) +
                          " proves every operation up to LSN " + std::to_string(durable) +
                          " durable: synced operations are damaged (open with repair: true to keep the valid prefix)");
  }
  for (const File& f : files) {
    uint64_t applied = 0;
    bool stopped = false;
    f.reader->ForEach([&](const WalRecord* r, uint64_t off) {
      if (stopped) return;
      if (r->lsn >= cut) {
        out.dropped_bytes += f.scan.prefix_end - off;
        stopped = true;
        return;
      }
      f.shard->Apply(*r, off, f.reader->name(), index_valid[f.shard->number()]);
      if (r->type == kWalMint) supply_ += r->amount;
      else if (r->type == kWalImage) {
        uint64_t supply[2];
        std::memcpy(supply, r->supply, sizeof supply);
        supply_ = GetSupply(supply);
      }
      applied++;
    });
    // What we replayed may still be only in the page cache (the crash was a
    // kill, not a power cut). It must be durable before the checkpoint that
    // follows writes shard pages derived from it.
    if (applied > 0) DataSyncOrThrow(f.log->fd(), f.log->name());
    out.records += applied;
  }
  // Nothing applied (the cut is at the first transaction, which may be an
  // unfinished image journal at a later LSN): the state is the checkpoint's.
  out.last_lsn = cut > base ? cut - 1 : checkpoint;
  lsn_ = out.last_lsn;
  published_lsn_ = staged_lsn_ = lsn_;
  applied_lsn_.store(lsn_);
  syncer_.Reset(lsn_, 0);
  return out;
}

void Core::Start() {
  started_ = true;
  accounts_ = 0;
  for (auto& s : shards_) accounts_ += s->count();
  if (!opts_.wal) return;
  // The next generation's file must hold a fresh header before a background
  // checkpoint can hand over to it; after a clean open it usually does.
  if (!next_prepared_) {
    uint64_t next = active_epoch_ + 1, now = WallMs();
    for (auto& s : shards_)
      if (!s->log(next).HeaderOnly(next)) s->log(next).ResetTo(next, now);
    next_prepared_ = true;
  }
  syncer_.Start();
}

void Core::SyncTo(uint64_t target) {
  std::lock_guard<std::mutex> g(close_mu_);
  if (syncer_.failed()) Fail(kIoError, "ledger is read-only after a failure: " + syncer_.failure());
  if (closed_) return;  // close checkpointed everything it had
  syncer_.SyncTo(target);
}

void Core::Failed(const std::string& why) { syncer_.Fail(why); }

// ------------------------------------------------------------------ operations

Shard& Core::ShardFor(const uint8_t* key, uint32_t* hash) const {
  *hash = KeyHash(key, manifest_.seed);
  return *shards_[ShardOf(*hash, manifest_.shards)];
}

Status Core::Corrupt(uint32_t shard, uint32_t slot) {
  corruptions_++;
  detail_ = "account record failed its checksum: " + FileName("shard", shard, "bin") + " slot " + std::to_string(slot);
  return kCorruption;
}

Status Core::Admit(Shard& a, Shard* b) {
  if (closed_) return kClosed;
  if (syncer_.failed()) return kIoError;
  if (!opts_.wal) return kOk;
  now_ms_ = WallMs();
  try {
    CheckpointPolicy();
    if (syncer_.failed()) return kIoError;
    uint32_t n = 2;
    if (b && b != &a) {
      a.log(active_epoch_).Reserve(1);
      b->log(active_epoch_).Reserve(1);
    } else {
      a.log(active_epoch_).Reserve(b ? 2 : 1);
      n = b ? 2 : 1;
    }
    uint64_t durable = syncer_.durable_records();
    if (records_ == durable) syncer_.NoteFirstUnsynced();
    if (records_ + n - durable > opts_.max_unsynced_records) {
      // At the bound of unsynced records: hand the syncer what is staged and
      // wait for it, so that a power cut never loses more.
      if (!FlushLogs()) return kIoError;
      if (!syncer_.WaitUnsyncedAtMost(records_ + n, opts_.max_unsynced_records)) return kIoError;
    }
  } catch (const Failure& f) {
    detail_ = f.message;
    return f.code;
  }
  return kOk;
}

// Starts a background checkpoint once checkpointEveryBytes of log have been
// written since the last hand-over; slows a writer that outruns one.
void Core::CheckpointPolicy() {
  if (!checkpointer_.running()) {
    FinishCheckpoint();
    if (handover_bytes_ >= opts_.checkpoint_every_bytes && !checkpoints_paused_) BeginCheckpoint(false, kTriggerBytes);
    return;
  }
  uint64_t live = handover_bytes_ + bytes_at_handover_;
  if (!throttled_ && live > 2 * opts_.checkpoint_every_bytes) {
    throttled_ = true;
    if (!FlushLogs()) return;
    checkpointer_.WaitFor(live > 4 * opts_.checkpoint_every_bytes ? kHardThrottleMs : kThrottleMs);
  }
}

void Core::AppendWal(Shard& s, uint32_t type, uint32_t slot, uint64_t lsn, uint32_t legs, uint32_t leg,
                     uint64_t amount) {
  LogWriter& log = s.log(active_epoch_);
  if (log.staged() == 0) staged_logs_.push_back(&log);
  WalRecord* r = log.Next();
  r->magic = kWalMagic;
  r->timestamp = now_ms_;
  r->type = type;
  std::memcpy(&r->account, s.Rec(slot), kAccountSize);
  r->lsn = lsn;
  r->epoch = active_epoch_;
  r->shard = s.number();
  r->slot = slot;
  r->legs = legs;
  r->leg = leg;
  r->amount = amount;
  r->durable_lsn = syncer_.durable_lsn();
  // The wal:false journal stands for a checkpoint: its records carry the supply it commits.
  // (WalRecord is packed: its fields are copied, never bound to references.)
  uint64_t supply[2] = {0, 0};
  if (type == kWalImage) SetSupply(supply, supply_);
  std::memcpy(r->supply, supply, sizeof supply);
  std::memset(r->reserved, 0, sizeof r->reserved);
  SealWal(r);
  if (tap_on_ && type != kWalImage) {
    const uint8_t* b = reinterpret_cast<const uint8_t*>(r);
    tap_.insert(tap_.end(), b, b + kWalRecordSize);
  }
  log.staged_lsn = lsn;
  handover_bytes_ += kWalRecordSize;
  staged_bytes_ += kWalRecordSize;
  records_++;
}

bool Core::FlushLogs() {
  for (LogWriter* l : staged_logs_) {
    if (int err = l->Flush(); err != 0) {
      // The records are not in the kernel. The operations they log were
      // applied in memory already: the ledger cannot take them back, so it
      // stops (read-only) and their callers are told IO_ERROR.
      detail_ = "write " + l->name() + ": " + std::strerror(err);
      Failed(detail_);
      write_failures_++;
      staged_logs_.clear();
      staged_bytes_ = 0;
      return false;
    }
    l->last_lsn.store(l->staged_lsn, std::memory_order_relaxed);
  }
  staged_logs_.clear();
  staged_bytes_ = 0;
  flushes_++;
  if (staged_lsn_ > published_lsn_) {
    published_lsn_ = staged_lsn_;
    syncer_.Published(published_lsn_, records_);
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
    if (!s.Valid(slot)) return Corrupt(s.number(), slot);
    if (s.Rec(slot)->lamports > UINT64_MAX - amount) return kOverflow;
  } else if (opts_.max_accounts > 0 && accounts_ >= opts_.max_accounts) {
    return kCapacityExceeded;
  } else if (Status room = s.Room(&detail_); room != kOk) {
    return room;  // the hard limit, or a full disk: nothing has changed
  }
  return kOk;
}

Status Core::MintOp(const uint8_t* key, uint64_t amount) {
  if (!batching_) throttled_ = false;
  if (amount == 0) return kInvalidAmount;
  uint32_t h, pos;
  Shard& s = ShardFor(key, &h);
  int64_t found;
  if (Status st = CheckCredit(s, key, h, amount, &found, &pos); st != kOk) return st;
  if (Status st = Admit(s, nullptr); st != kOk) return st;
  uint64_t lsn = NextLsn();
  uint32_t slot = found >= 0 ? static_cast<uint32_t>(found) : (accounts_++, s.Create(key, h, pos, lsn));
  AccountRecord* r = s.Rec(slot);
  r->lamports += amount;
  r->lsn = lsn;
  s.Seal(slot);
  supply_ += amount;
  if (!opts_.wal) return kOk;
  AppendWal(s, kWalMint, slot, lsn, 1, 0, amount);
  return Logged(lsn);
}

Status Core::TransferOp(const uint8_t* from, const uint8_t* to, uint64_t amount) {
  if (!batching_) throttled_ = false;
  if (amount == 0) return kInvalidAmount;
  if (std::memcmp(from, to, 32) == 0) return kSameAccount;
  uint32_t hf, ht, pos;
  Shard& sf = ShardFor(from, &hf);
  int64_t f = sf.Find(from, hf, &pos);
  if (f < 0) return kAccountNotFound;
  if (!sf.Valid(static_cast<uint32_t>(f))) return Corrupt(sf.number(), static_cast<uint32_t>(f));
  if (sf.Rec(static_cast<uint32_t>(f))->lamports < amount) return kInsufficientFunds;
  Shard& st = ShardFor(to, &ht);
  int64_t t;
  if (Status s = CheckCredit(st, to, ht, amount, &t, &pos); s != kOk) return s;
  if (Status s = Admit(sf, &st); s != kOk) return s;
  uint64_t lsn = NextLsn();
  uint32_t from_slot = static_cast<uint32_t>(f);
  uint32_t to_slot = t >= 0 ? static_cast<uint32_t>(t) : (accounts_++, st.Create(to, ht, pos, lsn));
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
  if (!s.Valid(static_cast<uint32_t>(found))) return Corrupt(s.number(), static_cast<uint32_t>(found));
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
  throttled_ = false;
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

// A batch's operations are counted once it is done: a failed write turns
// statuses already given into IO_ERROR.
static void CountBatch(uint64_t* counts, const uint8_t* statuses, size_t n) {
  for (size_t i = 0; i < n; i++) counts[statuses[i]]++;
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
    return MintOp(op, Le64(op + 32));
  });
  CountBatch(op_counts_ + kOpMint * kStatusSlots, statuses, n);
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
    return TransferOp(op, op + 32, Le64(op + 64));
  });
  CountBatch(op_counts_ + kOpTransfer * kStatusSlots, statuses, n);
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

bool Core::AnyDirty() const {
  for (auto& s : shards_)
    if (s->has_dirty()) return true;
  return false;
}

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
    s->log(active_epoch_).Reserve(n);
    s->ForEachCapturedSlot([&](uint32_t slot) { AppendWal(*s, kWalImage, slot, lsn_, total, leg++, 0); });
  }
  if (!FlushLogs()) Fail(kIoError, detail_);
  for (auto& s : shards_)
    if (s->log(active_epoch_).last_lsn.load() != 0) DataSyncOrThrow(s->log(active_epoch_).fd(), s->log(active_epoch_).name());
}

// Steps 2-4 of both checkpoints: data pages, index pages, the commit.
void Core::WriteBackAndCommit(const Manifest& next, const DurableWait& wait) {
  WriteBackBuffer buf;
  for (auto& s : shards_) s->WriteBackData(wait, buf);
  CrashPoint("checkpoint:after-data-sync");
  for (auto& s : shards_) s->WriteIndex(next, wait, buf);
  CrashPoint("checkpoint:after-index");
  Commit(next);
  CrashPoint("checkpoint:after-manifest");
}

// The commit point of both checkpoints: the manifest names the new epoch, and
// records of the old one are never replayed again.
void Core::Commit(const Manifest& next) {
  Manifest sealed = next;
  sealed.crc = Crc32c(&sealed, offsetof(Manifest, crc));
  ReplaceFile(dir_, "MANIFEST", &sealed, sizeof sealed);
  manifest_ = sealed;
  committed_lsn_.store(sealed.checkpoint_lsn);
}

void Core::CheckpointSync(bool force, CheckpointTrigger trigger) {
  if (closed_) Fail(kClosed, "ledger is closed");
  if (checkpointer_.running()) {
    if (!FlushLogs()) Fail(kIoError, detail_);
    checkpointer_.Wait(checkpointer_.started());
  }
  FinishCheckpoint();
  if (syncer_.failed()) Fail(kIoError, "ledger is read-only after a failure: " + syncer_.failure());
  if (!force && !AnyDirty() && lsn_ == manifest_.checkpoint_lsn) return;
  uint64_t t0 = Syncer::MonoUs();
  try {
    // Epoch E+2: records of E+1 that a crashed background checkpoint may have
    // left in the other file become stale with the commit.
    Manifest next = manifest_;
    next.epoch = manifest_.epoch + 2;
    next.checkpoint_lsn = lsn_;
    SetSupply(next.supply, supply_);
    next.crc = 0;
    if (!FlushLogs()) Fail(kIoError, detail_);  // a checkpoint may come mid-batch
    // One table per index, written whole: a rehash in progress is finished
    // (the foreground checkpoint holds everything up anyway).
    for (auto& s : shards_) s->FinishRehash();
    for (auto& s : shards_) s->Capture();
    // 1. The log first: every change about to reach the shard files must be
    //    durable in the log, so a torn write-back is repaired by replay.
    //    Before start() the only changes are those replay copied from the
    //    log, which Replay made durable: the log covers them already.
    if (opts_.wal) syncer_.SyncTo(lsn_);
    else if (started_) WriteImageJournal();
    CrashPoint("checkpoint:after-wal-sync");
    WriteBackAndCommit(next, nullptr);
    // 3. Fresh logs: the active generation and the next one, prepared. The
    //    checkpoint of a recovery (before start) empties the files, so that
    //    damage it cut is not met again by later opens.
    uint64_t now = WallMs();
    for (auto& s : shards_) {
      s->log(next.epoch).ResetTo(next.epoch, now, !started_);
      s->log(next.epoch + 1).ResetTo(next.epoch + 1, now, !started_);
      s->CheckpointDone();
    }
    CrashPoint("checkpoint:after-wal-reset");
    active_epoch_ = next.epoch;
    next_prepared_ = true;
    handover_bytes_ = 0;
    published_lsn_ = lsn_;
    syncer_.Reset(lsn_, records_);
    checkpointer_.Committed(Syncer::MonoUs() - t0, WallMs(), trigger);
  } catch (const Failure& f) {
    Failed(f.message);
    throw;
  }
}

uint64_t Core::BeginCheckpoint(bool force, CheckpointTrigger trigger) {
  if (closed_) Fail(kClosed, "ledger is closed");
  if (!opts_.wal || !started_) {
    CheckpointSync(force, trigger);
    return 0;
  }
  if (checkpointer_.running()) return checkpointer_.started();
  FinishCheckpoint();
  if (syncer_.failed()) Fail(kIoError, "ledger is read-only after a failure: " + syncer_.failure());
  if (!force && !AnyDirty() && lsn_ == manifest_.checkpoint_lsn) return 0;
  if (!next_prepared_) Fail(kIoError, "checkpoint: the next log generation is not prepared");
  // The hand-over: what is staged goes to the old generation, the dirty
  // pages become the checkpoint's, and appends move to the next generation.
  if (!FlushLogs()) Fail(kIoError, detail_);
  for (auto& s : shards_) s->Capture();
  Manifest next = manifest_;
  next.epoch = active_epoch_ + 1;
  next.checkpoint_lsn = lsn_;
  SetSupply(next.supply, supply_);
  next.crc = 0;
  bytes_at_handover_ = wal_bytes();
  active_epoch_ = next.epoch;
  next_prepared_ = false;
  handover_bytes_ = 0;
  CrashPoint("checkpoint:after-handover");
  uint64_t t0 = Syncer::MonoUs();
  return checkpointer_.Start([this, next, t0, trigger] { WriteCheckpoint(next, t0, trigger); });
}

// The checkpoint thread. Touches the syncer, the shards' captured pages (and,
// read-only, the pages the JS thread goes on changing), the files, and the
// old generation's log, which the JS thread no longer writes.
void Core::WriteCheckpoint(const Manifest& next, uint64_t started_us, CheckpointTrigger trigger) {
  try {
    syncer_.SyncTo(next.checkpoint_lsn);
    CrashPoint("checkpoint:after-wal-sync");
    const DurableWait wait = [this] {
      uint64_t applied = applied_lsn_.load(std::memory_order_relaxed);
      syncer_.SyncTo(applied);
    };
    WriteBackAndCommit(next, wait);
    // The old generation is obsolete now: prepare its file for the next one.
    uint64_t now = WallMs();
    for (auto& s : shards_) s->log(next.epoch + 1).ResetTo(next.epoch + 1, now);
    CrashPoint("checkpoint:after-wal-reset");
    checkpointer_.Committed(Syncer::MonoUs() - started_us, WallMs(), trigger);
  } catch (const Failure& f) {
    Failed(f.message);
    throw;
  }
}

void Core::FinishCheckpoint() {
  if (!checkpointer_.Reap() || syncer_.failed()) return;
  for (auto& s : shards_) s->CheckpointDone();
  next_prepared_ = true;
}

bool Core::Maintain() {
  if (closed_) return false;
  if (!checkpointer_.running()) {
    FinishCheckpoint();
    // Idle (nothing logged since the last hand-over): no checkpoint is coming
    // to give the pages the last one wrote their second look.
    if (handover_bytes_ == 0)
      for (auto& s : shards_) s->ReleaseWritten();
  }
  size_t budget = kReleasePages;
  for (auto& s : shards_) {
    size_t looked = s->Release(budget);
    budget -= std::min(budget, looked);
    if (budget == 0) return true;
  }
  return false;
}

void Core::Close() {
  if (closed_) return;
  if (checkpointer_.running()) {
    try {
      FlushLogs();
      checkpointer_.Wait(checkpointer_.started());
    } catch (const Failure&) {
      // the ledger is read-only already; the files are as the failure left them
    }
  }
  checkpointer_.Join();
  syncer_.Stop();
  std::lock_guard<std::mutex> g(close_mu_);
  closed_ = true;
  shards_.clear();
  if (lock_) lock_->Release();
}

uint64_t Core::wal_bytes() const {
  uint64_t n = 0;
  for (auto& s : shards_)
    for (uint32_t g = 0; g < kWalGenerations; g++) n += s->log(g).record_bytes();
  return n;
}

std::vector<uint64_t> Core::LogEnds() const {
  std::vector<uint64_t> out;
  for (auto& s : shards_) out.push_back(kWalRecordSize + s->log(active_epoch_).record_bytes());
  return out;
}

void Core::Counters(double* out) const {
  for (uint32_t i = 0; i < kCountedOps * kStatusSlots; i++) out[kCounterOps + i] = static_cast<double>(op_counts_[i]);
  out[kCounterWalWrittenBytes] = static_cast<double>(records_ * kWalRecordSize);
  out[kCounterWalFsyncs] = static_cast<double>(syncer_.fsyncs());
  out[kCounterCorruption] = static_cast<double>(corruptions_);
  for (uint32_t t = 0; t < kCheckpointTriggers; t++)
    out[kCounterCheckpoints + t] = static_cast<double>(checkpointer_.commits_by(static_cast<CheckpointTrigger>(t)));
  syncer_.fsync_histogram().Snapshot(out + kCounterFsyncHistogram);
  checkpointer_.duration_histogram().Snapshot(out + kCounterCheckpointHistogram);
}

std::vector<ShardStats> Core::Stats() const {
  std::vector<ShardStats> out;
  for (auto& s : shards_)
    out.push_back({s->count(), s->capacity(), s->index_rebuilds(), s->index_capacity(), s->index_resizes()});
  return out;
}

}  // namespace gl
