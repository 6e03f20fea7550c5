#include "syncer.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <ctime>
#include <system_error>
#include <fcntl.h>

#include "io.hpp"

namespace gl {
namespace {
// Threads waiting on log fsyncs in one group commit.
constexpr size_t kSyncThreads = 4;
}  // namespace

uint64_t Syncer::MonoMs() {
  struct timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return uint64_t(ts.tv_sec) * 1000 + uint64_t(ts.tv_nsec) / 1000000;
}

uint64_t Syncer::MonoUs() {
  struct timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000 + uint64_t(ts.tv_nsec) / 1000;
}

void Syncer::Configure(std::vector<LogWriter*> logs, uint32_t sync_every, uint32_t sync_interval_ms) {
  logs_ = std::move(logs);
  sync_every_ = std::max<uint32_t>(1, sync_every);
  sync_interval_ms_ = std::max<uint32_t>(1, sync_interval_ms);
}

void Syncer::Start() { thread_ = std::thread([this] { Loop(); }); }

void Syncer::Stop() {
  {
    std::lock_guard<std::mutex> g(kick_mu_);
    stop_ = true;
  }
  kick_cv_.notify_all();
  durable_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::string Syncer::failure() const {
  std::lock_guard<std::mutex> g(failure_mu_);
  return failure_;
}

void Syncer::Fail(const std::string& why) {
  {
    std::lock_guard<std::mutex> g(failure_mu_);
    if (failure_.empty()) failure_ = why;
  }
  failed_.store(true);
  { std::lock_guard<std::mutex> g(kick_mu_); }
  durable_cv_.notify_all();
}

void Syncer::Kick() {
  {
    std::lock_guard<std::mutex> g(kick_mu_);
    kicked_ = true;
  }
  kick_cv_.notify_one();
}

bool Syncer::RoundLocked() {
  if (failed_.load()) return false;
  uint64_t records = appended_records_.load(std::memory_order_acquire);
  uint64_t lsn = appended_lsn_.load(std::memory_order_acquire);
  uint64_t durable = durable_lsn_.load(std::memory_order_acquire);
  if (lsn > durable) {
    const uint64_t started_us = MonoUs();
    std::vector<LogWriter*> dirty;
    for (LogWriter* l : logs_)
      if (l->last_lsn.load(std::memory_order_acquire) > durable) dirty.push_back(l);
    // Start write-back of every log first, then wait on them from a few
    // threads: the disk works on all logs at once (half the time of one
    // fdatasync after another over 16 logs, measured).
    for (LogWriter* l : dirty) ::sync_file_range(l->fd(), 0, 0, SYNC_FILE_RANGE_WRITE);
    std::vector<int> errs(dirty.size(), 0);
    auto work = [&](size_t first, size_t step) {
      for (size_t i = first; i < dirty.size(); i += step) errs[i] = DataSync(dirty[i]->fd());
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
      Fail("fsync " + dirty[i]->name() + ": " + std::strerror(errs[i]));
      break;
    }
    if (!failed_.load()) {
      durable_records_.store(records, std::memory_order_release);
      durable_lsn_.store(lsn, std::memory_order_release);
      fsyncs_.fetch_add(1);
      fsync_histogram_.Observe(MonoUs() - started_us);
    }
  } else {
    durable_records_.store(std::max(durable_records_.load(), records), std::memory_order_release);
  }
  { std::lock_guard<std::mutex> g(kick_mu_); }
  durable_cv_.notify_all();
  return !failed_.load();
}

void Syncer::Loop() {
  const auto tick = std::chrono::milliseconds(std::max<uint32_t>(1, std::min<uint32_t>(100, sync_interval_ms_ / 10)));
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
        MonoMs() - first_unsynced_ms_.load() >= sync_interval_ms_)
      due = true;
    if (!due) continue;
    std::lock_guard<std::mutex> g(round_mu_);
    RoundLocked();
  }
}

void Syncer::SyncTo(uint64_t target) {
  // The checkpoint may ask for an LSN whose records the JS thread is still
  // staging (a batch writes its records at the end): wait for them to reach
  // the kernel first.
  while (appended_lsn_.load(std::memory_order_acquire) < target && !failed_.load()) {
    {
      std::lock_guard<std::mutex> g(kick_mu_);
      if (stop_) break;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  std::lock_guard<std::mutex> g(round_mu_);
  if (failed_.load()) gl::Fail(kIoError, "ledger is read-only after a failure: " + failure());
  if (durable_lsn_.load() >= target) return;
  if (!RoundLocked()) gl::Fail(kIoError, "ledger is read-only after a failure: " + failure());
}

bool Syncer::WaitUnsyncedAtMost(uint64_t records, uint64_t allowed) {
  Kick();
  std::unique_lock<std::mutex> lk(kick_mu_);
  durable_cv_.wait(lk, [&] {
    uint64_t d = durable_records_.load(std::memory_order_acquire);
    return failed_.load() || stop_ || records - d <= allowed;
  });
  return !failed_.load() && !stop_;
}

void Syncer::Reset(uint64_t lsn, uint64_t records) {
  std::lock_guard<std::mutex> g(round_mu_);
  appended_records_.store(records);
  durable_records_.store(records);
  durable_lsn_.store(lsn);
  appended_lsn_.store(lsn);
}

}  // namespace gl
