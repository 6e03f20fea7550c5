// The N-API surface: one wrapped class, LedgerCore. Arguments are checked in
// TypeScript (src/native-engine.ts) before they get here, so this layer only
// asserts shapes. C++ exceptions are enabled (NAPI_CPP_EXCEPTIONS): a Failure
// thrown anywhere in the core becomes a LedgerError built by the factory that
// src/ hands over at load time, so the error class and its code names live in
// TypeScript only.
#include <napi.h>

#include <memory>

#include "core.hpp"
#include "io.hpp"

namespace {

using gl::Core;
using gl::Failure;

struct InstanceData {
  Napi::FunctionReference error_factory;  // (status: number, message: string) => LedgerError
  Napi::FunctionReference core_ctor;
};

Napi::Error MakeError(Napi::Env env, gl::Status code, const std::string& message) {
  auto* data = env.GetInstanceData<InstanceData>();
  if (!data || data->error_factory.IsEmpty()) return Napi::Error::New(env, message);
  Napi::Value e = data->error_factory.Call({Napi::Number::New(env, code), Napi::String::New(env, message)});
  return Napi::Error(env, e);
}

// A type tag makes sure a LedgerCore method is never handed some other object.
const napi_type_tag kCoreTag = {0x6c65646765722d63ull, 0x6f72652d7461672eull};

// Every byte argument was checked to be a Uint8Array in TypeScript. One
// napi_get_typedarray_info call gives both pointer and length (As<Uint8Array>()
// makes two: its base class asks for the type and length first).
uint8_t* MutBytes(const Napi::Value& v, size_t* len) {
  void* data = nullptr;
  if (napi_get_typedarray_info(v.Env(), v, nullptr, len, &data, nullptr, nullptr) != napi_ok)
    throw Napi::TypeError::New(v.Env(), "expected a Uint8Array");
  return static_cast<uint8_t*>(data);
}
const uint8_t* Bytes(const Napi::Value& v, size_t* len) { return MutBytes(v, len); }
uint64_t Amount(const Napi::Value& v) {
  if (v.IsBigInt()) {
    bool lossless;
    return v.As<Napi::BigInt>().Uint64Value(&lossless);
  }
  return static_cast<uint64_t>(v.As<Napi::Number>().DoubleValue());
}

gl::Manifest ManifestFrom(const Napi::Object& o) {
  gl::Manifest m{};
  m.magic = gl::kManifestMagic;
  m.version = gl::kManifestVersion;
  m.shards = o.Get("shards").As<Napi::Number>().Uint32Value();
  m.accounts_per_shard = o.Get("accountsPerShard").As<Napi::Number>().Uint32Value();
  m.index_capacity = o.Get("indexCapacity").As<Napi::Number>().Uint32Value();
  m.seed = o.Get("seed").As<Napi::Number>().Uint32Value();
  bool lossless;
  m.epoch = o.Get("epoch").As<Napi::BigInt>().Uint64Value(&lossless);
  m.checkpoint_lsn = o.Get("checkpointLsn").As<Napi::BigInt>().Uint64Value(&lossless);
  // supply: a bigint in 0..2^128-1 (checked in TypeScript), as its two words.
  Napi::BigInt supply = o.Get("supply").As<Napi::BigInt>();
  int sign = 0;
  size_t words = 2;
  uint64_t w[2] = {0, 0};
  supply.ToWords(&sign, &words, w);
  m.supply[0] = w[0];
  m.supply[1] = words > 1 ? w[1] : 0;
  return m;
}

class SyncWorker : public Napi::AsyncWorker {
 public:
  SyncWorker(Napi::Env env, std::shared_ptr<Core> core, uint64_t target)
      : Napi::AsyncWorker(env), core_(std::move(core)), target_(target), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }
  // No N-API calls here: this runs on a libuv pool thread.
  void Execute() override {
    try {
      core_->SyncTo(target_);
    } catch (const Failure& f) {
      code_ = f.code;
      message_ = f.message;
    }
  }
  void OnOK() override {
    if (code_ == gl::kOk) deferred_.Resolve(Env().Undefined());
    else deferred_.Reject(MakeError(Env(), code_, message_).Value());
  }

 private:
  std::shared_ptr<Core> core_;
  uint64_t target_;
  Napi::Promise::Deferred deferred_;
  gl::Status code_ = gl::kOk;
  std::string message_;
};

// The promise of checkpoint(): waits on a pool thread for the background
// checkpoint run `seq` to commit. No N-API calls in Execute.
class CheckpointWorker : public Napi::AsyncWorker {
 public:
  CheckpointWorker(Napi::Env env, std::shared_ptr<Core> core, uint64_t seq)
      : Napi::AsyncWorker(env), core_(std::move(core)), seq_(seq), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute() override {
    try {
      core_->WaitCheckpoint(seq_);
    } catch (const Failure& f) {
      code_ = f.code;
      message_ = f.message;
    }
  }
  void OnOK() override {
    if (code_ != gl::kOk) {
      deferred_.Reject(MakeError(Env(), code_, message_).Value());
      return;
    }
    core_->FinishCheckpoint();  // back on the JS thread: the bookkeeping of the commit
    deferred_.Resolve(Env().Undefined());
  }

 private:
  std::shared_ptr<Core> core_;
  uint64_t seq_;
  Napi::Promise::Deferred deferred_;
  gl::Status code_ = gl::kOk;
  std::string message_;
};

class LedgerCore : public Napi::ObjectWrap<LedgerCore> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "LedgerCore",
                       {
                           InstanceMethod<&LedgerCore::Create>("create"),
                           InstanceMethod<&LedgerCore::Open>("open"),
                           InstanceMethod<&LedgerCore::LogsHeaderOnly>("logsHeaderOnly"),
                           InstanceMethod<&LedgerCore::Replay>("replay"),
                           InstanceMethod<&LedgerCore::RebuildIndex>("rebuildIndex"),
                           InstanceMethod<&LedgerCore::Start>("start"),
                           InstanceMethod<&LedgerCore::Mint>("mint"),
                           InstanceMethod<&LedgerCore::Transfer>("transfer"),
                           InstanceMethod<&LedgerCore::Get>("get"),
                           InstanceMethod<&LedgerCore::MintBatch>("mintBatch"),
                           InstanceMethod<&LedgerCore::TransferBatch>("transferBatch"),
                           InstanceMethod<&LedgerCore::GetBatch>("getBatch"),
                           InstanceMethod<&LedgerCore::Sync>("sync"),
                           InstanceMethod<&LedgerCore::CheckpointSync>("checkpointSync"),
                           InstanceMethod<&LedgerCore::Checkpoint>("checkpoint"),
                           InstanceMethod<&LedgerCore::Maintain>("maintain"),
                           InstanceMethod<&LedgerCore::Close>("close"),
                           InstanceMethod<&LedgerCore::Stats>("stats"),
                           InstanceMethod<&LedgerCore::Detail>("detail"),
                           InstanceMethod<&LedgerCore::Counters>("counters"),
                           InstanceMethod<&LedgerCore::PauseCheckpoints>("pauseCheckpoints"),
                           InstanceMethod<&LedgerCore::LogEnds>("logEnds"),
                           InstanceMethod<&LedgerCore::SetTap>("setTap"),
                           InstanceMethod<&LedgerCore::DrainTap>("drainTap"),
                       });
  }

  LedgerCore(const Napi::CallbackInfo& info) : Napi::ObjectWrap<LedgerCore>(info) {
    Guard(info.Env(), [&] { core_ = std::make_shared<Core>(info[0].As<Napi::String>().Utf8Value()); });
    info.This().As<Napi::Object>().TypeTag(&kCoreTag);
  }

 private:
  template <typename F>
  static void Guard(Napi::Env env, F f) {
    try {
      f();
    } catch (const Failure& e) {
      throw MakeError(env, e.code, e.message);
    }
  }
  Core& C(const Napi::CallbackInfo& info) {
    if (!info.This().As<Napi::Object>().CheckTypeTag(&kCoreTag) || !core_)
      throw MakeError(info.Env(), gl::kClosed, "ledger is closed");
    return *core_;
  }

  Napi::Value Create(const Napi::CallbackInfo& info) {
    Guard(info.Env(), [&] { C(info).Create(ManifestFrom(info[0].As<Napi::Object>())); });
    return info.Env().Undefined();
  }
  Napi::Value Open(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto o = info[1].As<Napi::Object>();
    gl::CoreOptions opts;
    opts.wal = o.Get("wal").As<Napi::Boolean>().Value();
    opts.sync_every = o.Get("syncEvery").As<Napi::Number>().Uint32Value();
    opts.sync_interval_ms = o.Get("syncIntervalMs").As<Napi::Number>().Uint32Value();
    opts.max_unsynced_records = static_cast<uint64_t>(o.Get("maxUnsyncedRecords").As<Napi::Number>().Int64Value());
    opts.checkpoint_every_bytes = static_cast<uint64_t>(o.Get("checkpointEveryBytes").As<Napi::Number>().Int64Value());
    opts.max_accounts = static_cast<uint64_t>(o.Get("maxAccounts").As<Napi::Number>().Int64Value());
    opts.read_ahead = o.Get("readAhead").As<Napi::Boolean>().Value();
    std::vector<bool> valid;
    Guard(env, [&] { valid = C(info).Open(ManifestFrom(info[0].As<Napi::Object>()), opts); });
    auto arr = Napi::Array::New(env, valid.size());
    for (size_t i = 0; i < valid.size(); i++) arr.Set(i, Napi::Boolean::New(env, valid[i]));
    return arr;
  }
  Napi::Value LogsHeaderOnly(const Napi::CallbackInfo& info) {
    bool r = false;
    Guard(info.Env(), [&] { r = C(info).LogsHeaderOnly(); });
    return Napi::Boolean::New(info.Env(), r);
  }
  Napi::Value Replay(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto arr = info[0].As<Napi::Array>();
    std::vector<bool> valid;
    for (uint32_t i = 0; i < arr.Length(); i++) valid.push_back(arr.Get(i).As<Napi::Boolean>().Value());
    gl::ReplayResult r;
    bool repair = info[1].ToBoolean().Value();
    Guard(env, [&] { r = C(info).Replay(valid, repair); });
    auto out = Napi::Object::New(env);
    out.Set("records", Napi::Number::New(env, static_cast<double>(r.records)));
    out.Set("droppedBytes", Napi::Number::New(env, static_cast<double>(r.dropped_bytes)));
    out.Set("lastLsn", Napi::BigInt::New(env, r.last_lsn));
    return out;
  }
  Napi::Value RebuildIndex(const Napi::CallbackInfo& info) {
    Guard(info.Env(), [&] { C(info).RebuildIndex(info[0].As<Napi::Number>().Uint32Value()); });
    return info.Env().Undefined();
  }
  Napi::Value Start(const Napi::CallbackInfo& info) {
    C(info).Start();
    return info.Env().Undefined();
  }

  // The hot paths return a status byte instead of throwing: TypeScript turns
  // a non-zero one into a LedgerError, and batches store it as is.
  Napi::Value Mint(const Napi::CallbackInfo& info) {
    size_t n;
    const uint8_t* key = Bytes(info[0], &n);
    return Napi::Number::New(info.Env(), C(info).Mint(key, Amount(info[1])));
  }
  Napi::Value Transfer(const Napi::CallbackInfo& info) {
    size_t n;
    const uint8_t* from = Bytes(info[0], &n);
    const uint8_t* to = Bytes(info[1], &n);
    return Napi::Number::New(info.Env(), C(info).Transfer(from, to, Amount(info[2])));
  }
  Napi::Value Get(const Napi::CallbackInfo& info) {
    size_t n;
    const uint8_t* key = Bytes(info[0], &n);
    uint8_t* out = MutBytes(info[1], &n);
    return Napi::Number::New(info.Env(), C(info).Get(key, out));
  }
  Napi::Value MintBatch(const Napi::CallbackInfo& info) {
    size_t len, n;
    const uint8_t* ops = Bytes(info[0], &len);
    uint8_t* st = MutBytes(info[1], &n);
    C(info).MintBatch(ops, n, st);
    return info.Env().Undefined();
  }
  Napi::Value TransferBatch(const Napi::CallbackInfo& info) {
    size_t len, n;
    const uint8_t* ops = Bytes(info[0], &len);
    uint8_t* st = MutBytes(info[1], &n);
    C(info).TransferBatch(ops, n, st);
    return info.Env().Undefined();
  }
  Napi::Value GetBatch(const Napi::CallbackInfo& info) {
    size_t len, n;
    const uint8_t* keys = Bytes(info[0], &len);
    uint8_t* out = MutBytes(info[1], &n);
    Guard(info.Env(), [&] { C(info).GetBatch(keys, len / 32, out); });
    return info.Env().Undefined();
  }
  Napi::Value Sync(const Napi::CallbackInfo& info) {
    auto* w = new SyncWorker(info.Env(), core_, C(info).lsn());
    Napi::Promise p = w->Promise();
    w->Queue();
    return p;
  }
  Napi::Value CheckpointSync(const Napi::CallbackInfo& info) {
    Guard(info.Env(), [&] { C(info).CheckpointSync(info[0].ToBoolean().Value(), Trigger(info[1])); });
    return info.Env().Undefined();
  }
  Napi::Value Checkpoint(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint64_t seq = 0;
    try {
      seq = C(info).BeginCheckpoint(false, Trigger(info[0]));
    } catch (const Failure& e) {
      auto d = Napi::Promise::Deferred::New(env);
      d.Reject(MakeError(env, e.code, e.message).Value());
      return d.Promise();
    }
    if (seq == 0) {
      auto d = Napi::Promise::Deferred::New(env);
      d.Resolve(env.Undefined());
      return d.Promise();
    }
    auto* w = new CheckpointWorker(env, core_, seq);
    Napi::Promise p = w->Promise();
    w->Queue();
    return p;
  }
  Napi::Value Maintain(const Napi::CallbackInfo& info) {
    bool more = false;
    if (core_) Guard(info.Env(), [&] { more = core_->Maintain(); });
    return Napi::Boolean::New(info.Env(), more);
  }
  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (core_) core_->Close();
    core_.reset();  // in-flight SyncWorkers keep their own reference
    return info.Env().Undefined();
  }
  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Core& c = C(info);
    auto out = Napi::Object::New(env);
    out.Set("lsn", Napi::BigInt::New(env, c.lsn()));
    out.Set("durableLsn", Napi::BigInt::New(env, c.wal() ? c.durable_lsn() : c.checkpoint_lsn()));
    out.Set("checkpointLsn", Napi::BigInt::New(env, c.checkpoint_lsn()));
    const uint64_t supply[2] = {static_cast<uint64_t>(c.supply()), static_cast<uint64_t>(c.supply() >> 64)};
    out.Set("supply", Napi::BigInt::New(env, 0, 2, supply));
    out.Set("walBytes", Napi::Number::New(env, static_cast<double>(c.wal_bytes())));
    out.Set("fsyncs", Napi::Number::New(env, static_cast<double>(c.fsyncs())));
    out.Set("readOnly", Napi::Boolean::New(env, c.failed()));
    out.Set("checkpoints", Napi::Number::New(env, static_cast<double>(c.checkpointer().commits())));
    out.Set("checkpointInProgress", Napi::Boolean::New(env, c.checkpoint_running()));
    out.Set("lastCheckpointMs", Napi::Number::New(env, static_cast<double>(c.checkpointer().last_ms())));
    out.Set("lastCheckpointAt", Napi::Number::New(env, static_cast<double>(c.checkpointer().last_at())));
    auto shards = Napi::Array::New(env);
    uint32_t i = 0;
    for (const auto& s : c.Stats()) {
      auto o = Napi::Object::New(env);
      o.Set("accounts", s.accounts);
      o.Set("capacity", s.capacity);
      o.Set("indexRebuilds", s.index_rebuilds);
      o.Set("indexCapacity", s.index_capacity);
      o.Set("indexResizes", s.index_resizes);
      shards.Set(i++, o);
    }
    out.Set("shards", shards);
    return out;
  }
  Napi::Value Detail(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), C(info).detail()); }
  // Read on scrape: one fresh Float64Array of kCounterSlots (counters.hpp).
  Napi::Value Counters(const Napi::CallbackInfo& info) {
    Core& c = C(info);
    auto out = Napi::Float64Array::New(info.Env(), gl::kCounterSlots);
    c.Counters(out.Data());
    return out;
  }
  Napi::Value LogEnds(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto ends = C(info).LogEnds();
    auto arr = Napi::Array::New(env, ends.size());
    for (size_t i = 0; i < ends.size(); i++) arr.Set(i, Napi::Number::New(env, static_cast<double>(ends[i])));
    return arr;
  }
  Napi::Value PauseCheckpoints(const Napi::CallbackInfo& info) {
    C(info).PauseCheckpoints(info[0].ToBoolean().Value());
    return info.Env().Undefined();
  }
  // Replication's record tap (Core::SetTap): drainTap returns the records since the last call, whole, in a Buffer.
  Napi::Value SetTap(const Napi::CallbackInfo& info) {
    C(info).SetTap(info[0].ToBoolean().Value());
    return info.Env().Undefined();
  }
  Napi::Value DrainTap(const Napi::CallbackInfo& info) {
    C(info).DrainTap(&tap_out_);
    auto buf = Napi::Buffer<uint8_t>::Copy(info.Env(), tap_out_.data(), tap_out_.size());
    tap_out_.clear();
    return buf;
  }
  static gl::CheckpointTrigger Trigger(const Napi::Value& v) {
    return static_cast<gl::CheckpointTrigger>(v.As<Napi::Number>().Uint32Value());
  }

  std::shared_ptr<Core> core_;
  std::vector<uint8_t> tap_out_;  // DrainTap's swap space: the core keeps appending to a buffer it reuses
};

Napi::Value SetErrorFactory(const Napi::CallbackInfo& info) {
  info.Env().GetInstanceData<InstanceData>()->error_factory = Napi::Persistent(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

// The format constants as the compiler lays them out (offsetof, sizeof), so
// that a test can hold src/format.ts to native/format.h.
Napi::Object Formats(Napi::Env env) {
  auto o = Napi::Object::New(env);
  auto n = [&](const char* name, double v) { o.Set(name, Napi::Number::New(env, v)); };
  n("ACCOUNT_SIZE", sizeof(gl::AccountRecord));
  n("ACCOUNT_CRC_LEN", gl::kAccountCrcLen);
  n("ACCOUNT_VERSION", gl::kAccountVersion);
  n("Account.PUBKEY", offsetof(gl::AccountRecord, pubkey));
  n("Account.LAMPORTS", offsetof(gl::AccountRecord, lamports));
  n("Account.LSN", offsetof(gl::AccountRecord, lsn));
  n("Account.OWNER", offsetof(gl::AccountRecord, owner));
  n("Account.RENT_EPOCH", offsetof(gl::AccountRecord, rent_epoch));
  n("Account.CREATED_LSN", offsetof(gl::AccountRecord, created_lsn));
  n("Account.SLOT", offsetof(gl::AccountRecord, slot));
  n("Account.FLAGS", offsetof(gl::AccountRecord, flags));
  n("Account.DATA_LEN", offsetof(gl::AccountRecord, data_len));
  n("Account.VERSION", offsetof(gl::AccountRecord, version));
  n("Account.CRC", offsetof(gl::AccountRecord, crc));
  n("WAL_RECORD_SIZE", sizeof(gl::WalRecord));
  n("WAL_MAGIC", gl::kWalMagic);
  n("WAL_GENERATIONS", gl::kWalGenerations);
  n("Wal.MAGIC", offsetof(gl::WalRecord, magic));
  n("Wal.TIMESTAMP", offsetof(gl::WalRecord, timestamp));
  n("Wal.TYPE", offsetof(gl::WalRecord, type));
  n("Wal.CRC", offsetof(gl::WalRecord, crc));
  n("Wal.ACCOUNT", offsetof(gl::WalRecord, account));
  n("Wal.LSN", offsetof(gl::WalRecord, lsn));
  n("Wal.EPOCH", offsetof(gl::WalRecord, epoch));
  n("Wal.SHARD", offsetof(gl::WalRecord, shard));
  n("Wal.SLOT", offsetof(gl::WalRecord, slot));
  n("Wal.LEGS", offsetof(gl::WalRecord, legs));
  n("Wal.LEG", offsetof(gl::WalRecord, leg));
  n("Wal.AMOUNT", offsetof(gl::WalRecord, amount));
  n("Wal.DURABLE_LSN", offsetof(gl::WalRecord, durable_lsn));
  n("Wal.SUPPLY", offsetof(gl::WalRecord, supply));
  n("WalType.HEADER", gl::kWalHeader);
  n("WalType.MINT", gl::kWalMint);
  n("WalType.DEBIT", gl::kWalDebit);
  n("WalType.CREDIT", gl::kWalCredit);
  n("WalType.IMAGE", gl::kWalImage);
  n("PAGE_SIZE", gl::kPageSize);
  n("MAX_ACCOUNTS_PER_SHARD", gl::kMaxAccountsPerShard);
  n("DATA_GROW_MAX_SLOTS", gl::kDataGrowMaxSlots);
  n("MAX_INDEX_CAPACITY", gl::kMaxIndexCapacity);
  n("INDEX_LOAD_DIVISOR", gl::kIndexLoadDivisor);
  n("REHASH_ENTRIES_PER_INSERT", gl::kRehashEntriesPerInsert);
  n("INDEX_MAGIC", gl::kIndexMagic);
  n("INDEX_HEADER_SIZE", sizeof(gl::IndexHeader));
  n("INDEX_VERSION", gl::kIndexVersion);
  n("INDEX_HEADER_CRC_LEN", gl::kIndexHeaderCrcLen);
  n("ENTRIES_PER_PAGE", gl::kEntriesPerPage);
  n("Index.MAGIC", offsetof(gl::IndexHeader, magic));
  n("Index.VERSION", offsetof(gl::IndexHeader, version));
  n("Index.SHARD", offsetof(gl::IndexHeader, shard));
  n("Index.CAPACITY", offsetof(gl::IndexHeader, capacity));
  n("Index.COUNT", offsetof(gl::IndexHeader, count));
  n("Index.PAGES", offsetof(gl::IndexHeader, page_count));
  n("Index.EPOCH", offsetof(gl::IndexHeader, epoch));
  n("Index.CHECKPOINT_LSN", offsetof(gl::IndexHeader, checkpoint_lsn));
  n("Index.SEED", offsetof(gl::IndexHeader, seed));
  n("Index.TABLE_CRC", offsetof(gl::IndexHeader, table_crc));
  n("Index.CRC", offsetof(gl::IndexHeader, crc));
  n("MANIFEST_MAGIC", gl::kManifestMagic);
  n("MANIFEST_VERSION", gl::kManifestVersion);
  n("MANIFEST_SIZE", sizeof(gl::Manifest));
  n("ManifestField.EPOCH", offsetof(gl::Manifest, epoch));
  n("ManifestField.CHECKPOINT_LSN", offsetof(gl::Manifest, checkpoint_lsn));
  n("ManifestField.SUPPLY", offsetof(gl::Manifest, supply));
  n("ManifestField.CRC", offsetof(gl::Manifest, crc));
  n("MINT_OP_SIZE", gl::kMintOpSize);
  n("TRANSFER_OP_SIZE", gl::kTransferOpSize);
  return o;
}

// The counters' layout (counters.hpp), for the test that holds src/counters.ts to it.
Napi::Object CounterLayout(Napi::Env env) {
  auto o = Napi::Object::New(env);
  auto n = [&](const char* name, double v) { o.Set(name, Napi::Number::New(env, v)); };
  n("OPS", gl::kCounterOps);
  n("STATUS_SLOTS", gl::kStatusSlots);
  n("OP_MINT", gl::kOpMint);
  n("OP_TRANSFER", gl::kOpTransfer);
  n("WAL_WRITTEN_BYTES", gl::kCounterWalWrittenBytes);
  n("WAL_FSYNCS", gl::kCounterWalFsyncs);
  n("CORRUPTION", gl::kCounterCorruption);
  n("CHECKPOINTS", gl::kCounterCheckpoints);
  n("FSYNC_HISTOGRAM", gl::kCounterFsyncHistogram);
  n("CHECKPOINT_HISTOGRAM", gl::kCounterCheckpointHistogram);
  n("SLOTS", gl::kCounterSlots);
  n("TRIGGER_EXPLICIT", gl::kTriggerExplicit);
  n("TRIGGER_BYTES", gl::kTriggerBytes);
  n("TRIGGER_INTERVAL", gl::kTriggerInterval);
  n("TRIGGER_CLOSE", gl::kTriggerClose);
  n("TRIGGER_OPEN", gl::kTriggerOpen);
  auto bounds = [&](const uint64_t* b, size_t count) {
    auto a = Napi::Array::New(env, count);
    for (size_t i = 0; i < count; i++) a.Set(i, Napi::Number::New(env, static_cast<double>(b[i])));
    return a;
  };
  o.Set("FSYNC_BOUNDS_US", bounds(gl::kFsyncBoundsUs, gl::kFsyncBuckets - 1));
  o.Set("CHECKPOINT_BOUNDS_US", bounds(gl::kCheckpointBoundsUs, gl::kCheckpointBuckets - 1));
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* data = new InstanceData();
  env.SetInstanceData(data);  // one per environment: workers get their own
  exports.Set("LedgerCore", LedgerCore::Define(env));
  exports.Set("setErrorFactory", Napi::Function::New(env, SetErrorFactory));
  exports.Set("formats", Formats(env));
  exports.Set("counters", CounterLayout(env));
  return exports;
}

}  // namespace

NODE_API_MODULE(geometric_ledger, Init)
