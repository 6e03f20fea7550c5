#include "lock.hpp"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include "io.hpp"

namespace gl {
namespace {

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

}  // namespace

DirLock::DirLock(const std::string& dir) {
  fd_ = OpenFile(dir + "/LOCK", O_RDWR | O_CREAT);
  // flock belongs to the open file description: a second open in this process
  // conflicts too, and the kernel drops the lock when the process dies.
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    ::close(fd_);
    fd_ = -1;
    if (err == EWOULDBLOCK) Fail(kLocked, "ledger directory is locked by another open ledger: " + dir);
    FailErrno("lock " + dir, err);
  }
  // The start time (field 22 of /proc/<pid>/stat) tells a live holder from an
  // unrelated process that was given a dead holder's pid.
  char buf[64] = {};
  ssize_t n = ::pread(fd_, buf, sizeof buf - 1, 0);
  long pid = 0;
  unsigned long long start = 0;
  if (n > 0) std::sscanf(buf, "%ld %llu", &pid, &start);
  // Our own pid counts too: a native core always clears LOCK when it lets go,
  // so our pid here means a TypeScript-engine ledger of this process holds it.
  if (pid > 0 && start != 0 && ProcessStart(pid) == start) {
    ::close(fd_);
    fd_ = -1;
    Fail(kLocked, "ledger directory is locked by process " + std::to_string(pid) + ": " + dir);
  }
  std::string me = std::to_string(::getpid()) + " " + std::to_string(ProcessStart(::getpid())) + "\n";
  if (::ftruncate(fd_, 0) == 0) WriteAt(fd_, me.data(), me.size(), 0, "LOCK");
}

void DirLock::Release() {
  if (fd_ < 0) return;
  // Clearing the pid is only a hint for the TypeScript engine; the flock goes
  // with the descriptor.
  if (::ftruncate(fd_, 0) != 0) {
  }
  ::close(fd_);
  fd_ = -1;
}

}  // namespace gl
