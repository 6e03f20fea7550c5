// File primitives with the ledger's failure policy: every error becomes a
// Failure carrying a status, thrown to the N-API boundary. Also the two test
// hooks (crash points, failing fsync), read from the environment once per open.
#pragma once
#include <cstdint>
#include <string>
#include <sys/types.h>

#include "format.h"

namespace gl {

struct Failure {
  Status code;
  std::string message;
};
[[noreturn]] void Fail(Status code, const std::string& message);
[[noreturn]] void FailErrno(const std::string& what, int err);

std::string FileName(const char* prefix, uint32_t shard, const char* ext);  // shard_003.bin
int OpenFile(const std::string& path, int flags);                          // throws IO_ERROR
void WriteAt(int fd, const void* data, size_t n, uint64_t offset, const std::string& what);
void ReadAt(int fd, void* data, size_t n, uint64_t offset, const std::string& what);
uint64_t FileSize(int fd);
void Resize(int fd, uint64_t size, const std::string& what);
// Grows the file to `size` with blocks allocated now, so that a full disk is an
// error here and never a SIGBUS on a mapped page later.
void Allocate(int fd, uint64_t size, const std::string& what);
// fdatasync; returns errno (0 on success). Counts calls for GL_FAIL_FSYNC_AT.
int DataSync(int fd);
void DataSyncOrThrow(int fd, const std::string& what);
void SyncDir(const std::string& dir);
// Atomically replaces dir/name with `data`: tmp file, fsync, rename, fsync dir.
void ReplaceFile(const std::string& dir, const std::string& name, const void* data, size_t n);

struct Hooks {
  std::string crash_at;      // GL_CRASH_AT
  int64_t fail_fsync_at = 0; // GL_FAIL_FSYNC_AT
  static void Load();
};
void CrashPoint(const char* name);  // SIGKILLs the process when name == GL_CRASH_AT

}  // namespace gl
