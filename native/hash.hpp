// Key hashing shared by shard placement and the index. It must match
// src/js/hash.ts bit for bit: both engines place keys identically.
// Murmur3-32 over the key's eight 32-bit words, keyed by the ledger's random
// seed (kept in the manifest) so that crafted keys cannot pile into one bucket.
#pragma once
#include <cstdint>
#include <cstring>

namespace gl {

inline uint32_t Rotl(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }
inline uint32_t Fmix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return h;
}
inline uint32_t KeyHash(const uint8_t* key, uint32_t seed) {
  uint32_t h = seed;
  for (int i = 0; i < 8; i++) {
    uint32_t k;
    std::memcpy(&k, key + 4 * i, 4);
    k *= 0xcc9e2d51u;
    k = Rotl(k, 15);
    k *= 0x1b873593u;
    h ^= k;
    h = Rotl(h, 13);
    h = h * 5 + 0xe6546b64u;
  }
  return Fmix32(h ^ 32u);
}
// Multiply-shift: uses the high bits, the bucket uses a remix of all of them.
inline uint32_t ShardOf(uint32_t hash, uint32_t shards) {
  return static_cast<uint32_t>((uint64_t(hash) * shards) >> 32);
}
inline uint32_t BucketOf(uint32_t hash, uint32_t mask) { return Fmix32(hash ^ 0x9e3779b9u) & mask; }

}  // namespace gl
