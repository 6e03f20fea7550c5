// CRC-32C (Castagnoli). The hardware instruction when the CPU has it (checked
// once), a slice-by-8 table otherwise: every record read and written is
// checksummed, so this sits on the hot path.
#pragma once
#include <cstddef>
#include <cstdint>

namespace gl {

// Raw state update: start from 0xFFFFFFFF, finish with ~state.
uint32_t Crc32cUpdate(uint32_t state, const void* data, size_t n);
inline uint32_t Crc32c(const void* data, size_t n) { return ~Crc32cUpdate(0xFFFFFFFFu, data, n); }

}  // namespace gl
