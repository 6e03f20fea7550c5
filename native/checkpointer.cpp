#include "checkpointer.hpp"

#include <chrono>

#include "io.hpp"

namespace gl {

uint64_t Checkpointer::Start(std::function<void()> work) {
  Join();
  uint64_t seq = started_.load() + 1;
  {
    std::lock_guard<std::mutex> g(mu_);
    failed_ = false;
  }
  started_.store(seq);
  try {
    thread_ = std::thread([this, seq, work = std::move(work)] {
      Failure f{kOk, ""};
      try {
        work();
      } catch (const Failure& e) {
        f = e;
      } catch (const std::exception& e) {
        f = Failure{kIoError, std::string("checkpoint: ") + e.what()};
      }
      {
        std::lock_guard<std::mutex> g(mu_);
        failed_ = f.code != kOk;
        failure_ = f;
        finished_.store(seq);
      }
      done_cv_.notify_all();
    });
  } catch (const std::system_error& e) {
    finished_.store(seq);
    Fail(kIoError, std::string("checkpoint: cannot start a thread: ") + e.what());
  }
  return seq;
}

void Checkpointer::Wait(uint64_t seq) {
  std::unique_lock<std::mutex> lk(mu_);
  done_cv_.wait(lk, [&] { return finished_.load() >= seq; });
  if (finished_.load() == seq && failed_) throw failure_;
}

void Checkpointer::WaitFor(uint32_t ms) {
  std::unique_lock<std::mutex> lk(mu_);
  done_cv_.wait_for(lk, std::chrono::milliseconds(ms), [&] { return finished_.load() == started_.load(); });
}

bool Checkpointer::Reap() {
  if (running() || reaped_ == finished_.load()) return false;
  Join();
  reaped_ = finished_.load();
  return true;
}

void Checkpointer::Join() {
  if (thread_.joinable()) thread_.join();
}

}  // namespace gl
