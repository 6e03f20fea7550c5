// The directory lock: flock on LOCK (dies with the process), plus "pid
// starttime" written into the file so that the pure-TypeScript engine, which
// cannot flock, sees the hold, and so that a dead holder's reused pid is not
// taken for a live holder (docs/durability.md, promise 5).
#pragma once
#include <string>

namespace gl {

class DirLock {
 public:
  explicit DirLock(const std::string& dir);  // throws LOCKED or IO_ERROR
  ~DirLock() { Release(); }
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;
  void Release();

 private:
  int fd_ = -1;
};

}  // namespace gl
