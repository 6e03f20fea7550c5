#include "io.hpp"

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace gl {
namespace {
Hooks g_hooks;
std::atomic<int64_t> g_fsyncs{0};
}  // namespace

void Hooks::Load() {
  const char* c = std::getenv("GL_CRASH_AT");
  g_hooks.crash_at = c ? c : "";
  const char* f = std::getenv("GL_FAIL_FSYNC_AT");
  g_hooks.fail_fsync_at = f ? std::atoll(f) : 0;
  g_fsyncs.store(0);
}

void CrashPoint(const char* name) {
  if (!g_hooks.crash_at.empty() && g_hooks.crash_at == name) {
    std::fprintf(stderr, "geometric-ledger: GL_CRASH_AT=%s: SIGKILL\n", name);
    std::raise(SIGKILL);
  }
}

void Fail(Status code, const std::string& message) { throw Failure{code, message}; }
void FailErrno(const std::string& what, int err) {
  Fail(kIoError, what + ": " + std::strerror(err));
}

std::string FileName(const char* prefix, uint32_t shard, const char* ext) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s_%03u.%s", prefix, shard, ext);
  return buf;
}

int OpenFile(const std::string& path, int flags) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC, 0644);
  if (fd < 0) FailErrno("open " + path, errno);
  return fd;
}

void WriteAt(int fd, const void* data, size_t n, uint64_t offset, const std::string& what) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::pwrite(fd, p, n, static_cast<off_t>(offset));
    if (w < 0) {
      if (errno == EINTR) continue;
      FailErrno("write " + what, errno);
    }
    p += w;
    n -= static_cast<size_t>(w);
    offset += static_cast<uint64_t>(w);
  }
}

void ReadAt(int fd, void* data, size_t n, uint64_t offset, const std::string& what) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    ssize_t r = ::pread(fd, p, n, static_cast<off_t>(offset));
    if (r < 0) {
      if (errno == EINTR) continue;
      FailErrno("read " + what, errno);
    }
    if (r == 0) Fail(kCorruption, what + ": file too short");
    p += r;
    n -= static_cast<size_t>(r);
    offset += static_cast<uint64_t>(r);
  }
}

uint64_t FileSize(int fd) {
  struct stat st;
  if (::fstat(fd, &st) != 0) FailErrno("fstat", errno);
  return static_cast<uint64_t>(st.st_size);
}

void Resize(int fd, uint64_t size, const std::string& what) {
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) FailErrno("resize " + what, errno);
}

void Allocate(int fd, uint64_t size, const std::string& what) {
  uint64_t cur = FileSize(fd);
  if (size <= cur) return;
  int r = ::posix_fallocate(fd, static_cast<off_t>(cur), static_cast<off_t>(size - cur));
  if (r == EOPNOTSUPP || r == ENOSYS || r == EINVAL) {
    // Filesystems without fallocate (FUSE): write zeros so blocks exist now.
    static const char zeros[65536] = {};
    for (uint64_t off = cur; off < size;) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(sizeof zeros, size - off));
      WriteAt(fd, zeros, n, off, what);
      off += n;
    }
    return;
  }
  if (r != 0) FailErrno("allocate " + what, r);
}

int DataSync(int fd) {
  int64_t n = g_fsyncs.fetch_add(1) + 1;
  if (g_hooks.fail_fsync_at > 0 && n >= g_hooks.fail_fsync_at) return EIO;
  if (::fdatasync(fd) != 0) return errno;
  return 0;
}

void DataSyncOrThrow(int fd, const std::string& what) {
  int err = DataSync(fd);
  if (err != 0) FailErrno("fsync " + what, err);
}

void SyncDir(const std::string& dir) {
  int fd = OpenFile(dir, O_RDONLY | O_DIRECTORY);
  int err = DataSync(fd);
  ::close(fd);
  if (err != 0) FailErrno("fsync directory", err);
}

void ReplaceFile(const std::string& dir, const std::string& name, const void* data, size_t n) {
  std::string tmp = dir + "/" + name + ".tmp";
  int fd = OpenFile(tmp, O_RDWR | O_CREAT | O_TRUNC);
  try {
    WriteAt(fd, data, n, 0, name);
    DataSyncOrThrow(fd, name);
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  if (::rename(tmp.c_str(), (dir + "/" + name).c_str()) != 0) FailErrno("rename " + name, errno);
  SyncDir(dir);
}

}  // namespace gl
