// Runs a background checkpoint's write-back on a thread of its own and lets
// others wait for it (docs/durability.md, "Background checkpoint"). What the
// steps are is Core's business (Core::WriteCheckpoint); this class owns the
// thread, the sequence numbers, the outcome of each run and its timings.
//
// Threads: Start, Reap and running() are for the JS thread; Wait and WaitFor
// may be called from any thread (an AsyncWorker waits here for the promise of
// checkpoint()). The work function makes no N-API calls.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "counters.hpp"
#include "format.h"
#include "io.hpp"

namespace gl {

class Checkpointer {
 public:
  ~Checkpointer() { Join(); }

  // Runs `work` on a new thread; returns the run's sequence number (from 1).
  uint64_t Start(std::function<void()> work);
  bool running() const { return started_.load() != finished_.load(); }
  uint64_t started() const { return started_.load(); }
  // Blocks until run `seq` has finished; throws the Failure it ended with.
  void Wait(uint64_t seq);
  // Blocks until the current run finishes or `ms` pass (writers being slowed).
  void WaitFor(uint32_t ms);
  // Joins a finished thread; true once per run that finished (successfully or not).
  bool Reap();
  void Join();

  // Timings of the last committed checkpoint, any checkpoint, foreground too,
  // and the counts by trigger (any thread: the checkpoint thread commits).
  void Committed(uint64_t duration_us, uint64_t at_ms, CheckpointTrigger trigger) {
    last_ms_.store(duration_us / 1000);
    last_at_.store(at_ms);
    by_trigger_[trigger].fetch_add(1, std::memory_order_relaxed);
    duration_histogram_.Observe(duration_us);
    commits_.fetch_add(1);
  }
  uint64_t commits_by(CheckpointTrigger trigger) const { return by_trigger_[trigger].load(std::memory_order_relaxed); }
  const CheckpointHistogram& duration_histogram() const { return duration_histogram_; }
  uint64_t commits() const { return commits_.load(); }
  uint64_t last_ms() const { return last_ms_.load(); }
  uint64_t last_at() const { return last_at_.load(); }

 private:
  std::thread thread_;
  std::atomic<uint64_t> started_{0}, finished_{0};
  uint64_t reaped_ = 0;
  std::mutex mu_;
  std::condition_variable done_cv_;
  bool failed_ = false;  // the last finished run failed (guarded by mu_)
  Failure failure_{kOk, ""};
  std::atomic<uint64_t> commits_{0}, last_ms_{0}, last_at_{0};
  std::atomic<uint64_t> by_trigger_[kCheckpointTriggers] = {};
  CheckpointHistogram duration_histogram_{kCheckpointBoundsUs};
};

}  // namespace gl
