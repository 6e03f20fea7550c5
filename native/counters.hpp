// What the core counts for monitoring, and the layout of the snapshot it hands
// out (LedgerCore.counters(): a Float64Array of kCounterSlots). src/counters.ts
// mirrors these numbers and a test holds the two to each other (the addon
// exports them as `counters`). Counting is cheap on purpose: an operation adds
// one to a plain array on the JS thread; the syncer and checkpoint threads add
// to histograms with relaxed atomics; everything is read only when scraped.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "format.h"

namespace gl {

// Operations counted per result: slot kCounterOps + op * kStatusSlots + status.
enum CountedOp : uint32_t { kOpMint = 0, kOpTransfer = 1 };
constexpr uint32_t kCountedOps = 2;
constexpr uint32_t kStatusSlots = 16;  // room for every gl::Status
static_assert(kLocked < kStatusSlots, "every status has a slot");

// What started a checkpoint (counted when it commits).
enum CheckpointTrigger : uint32_t {
  kTriggerExplicit = 0,  // checkpoint(), or sync() with wal:false
  kTriggerBytes = 1,     // checkpointEveryBytes of log since the last one
  kTriggerInterval = 2,  // checkpointIntervalMs since the last one
  kTriggerClose = 3,     // close()
  kTriggerOpen = 4,      // creating a ledger, or the end of a recovery
};
constexpr uint32_t kCheckpointTriggers = 5;

// Histogram bucket upper bounds, in microseconds; a last bucket (+Inf) follows.
constexpr uint64_t kFsyncBoundsUs[] = {100,    250,    500,     1000,    2500,    5000,    10000,   25000,
                                       50000,  100000, 250000,  500000,  1000000, 2500000, 5000000, 10000000};
constexpr uint64_t kCheckpointBoundsUs[] = {1000,    5000,    10000,   25000,    50000,    100000,   250000,  500000,
                                            1000000, 2500000, 5000000, 10000000, 30000000, 60000000, 120000000};
constexpr uint32_t kFsyncBuckets = sizeof(kFsyncBoundsUs) / sizeof(kFsyncBoundsUs[0]) + 1;
constexpr uint32_t kCheckpointBuckets = sizeof(kCheckpointBoundsUs) / sizeof(kCheckpointBoundsUs[0]) + 1;

// The snapshot's slots. A histogram is its bucket counts (not cumulative),
// then the sum of the observations in microseconds.
constexpr uint32_t kCounterOps = 0;
constexpr uint32_t kCounterWalWrittenBytes = kCounterOps + kCountedOps * kStatusSlots;
constexpr uint32_t kCounterWalFsyncs = kCounterWalWrittenBytes + 1;
constexpr uint32_t kCounterCorruption = kCounterWalFsyncs + 1;
constexpr uint32_t kCounterCheckpoints = kCounterCorruption + 1;
constexpr uint32_t kCounterFsyncHistogram = kCounterCheckpoints + kCheckpointTriggers;
constexpr uint32_t kCounterCheckpointHistogram = kCounterFsyncHistogram + kFsyncBuckets + 1;
constexpr uint32_t kCounterSlots = kCounterCheckpointHistogram + kCheckpointBuckets + 1;

// A histogram filled from any thread (relaxed atomics: each bucket is exact,
// a scrape may see one observation in the sum and not yet in its bucket).
template <size_t N>
class Histogram {
 public:
  explicit Histogram(const uint64_t (&bounds)[N]) : bounds_(bounds) {}
  void Observe(uint64_t us) {
    size_t i = 0;
    while (i < N && us > bounds_[i]) i++;
    buckets_[i].fetch_add(1, std::memory_order_relaxed);
    sum_us_.fetch_add(us, std::memory_order_relaxed);
  }
  // Writes the N+1 bucket counts then the sum (microseconds) to out.
  void Snapshot(double* out) const {
    for (size_t i = 0; i <= N; i++) out[i] = static_cast<double>(buckets_[i].load(std::memory_order_relaxed));
    out[N + 1] = static_cast<double>(sum_us_.load(std::memory_order_relaxed));
  }

 private:
  const uint64_t (&bounds_)[N];
  std::atomic<uint64_t> buckets_[N + 1] = {};
  std::atomic<uint64_t> sum_us_{0};
};

using FsyncHistogram = Histogram<kFsyncBuckets - 1>;
using CheckpointHistogram = Histogram<kCheckpointBuckets - 1>;

}  // namespace gl
