// Every on-disk format of geometric-ledger, in one place. docs/formats.md gives the
// grammar of each file and a worked example; src/format.ts mirrors these constants
// for the TypeScript side and the two are checked against each other by a test.
//
// All integers are little-endian. All checksums are CRC-32C (Castagnoli,
// reflected, init 0xFFFFFFFF, final xor 0xFFFFFFFF): it has a hardware
// instruction on x86-64 and arm64, and a table-driven form in TypeScript.
#pragma once
#include <cstddef>
#include <cstdint>

namespace gl {

// ---------------------------------------------------------------- account
// shard_NNN.bin is a plain array of 128-byte records; slot i lives at byte
// i*128. An all-zero record is an empty slot. Slots are handed out in order, so
// a shard's used slots are 0..count-1. The file starts with `accountsPerShard`
// slots and grows while the ledger runs (NextDataCapacity): its size is the
// shard's capacity, a multiple of 128 bytes, at least accountsPerShard.
constexpr uint32_t kAccountSize = 128;
constexpr uint32_t kAccountVersion = 1;
struct AccountRecord {
  uint8_t pubkey[32];    //   0 owner of the balance (ed25519 public key)
  uint64_t lamports;     //  32 balance
  uint64_t lsn;          //  40 LSN of the last operation that changed this record
  uint8_t owner[32];     //  48 owning program (Solana); zero = system
  uint64_t rent_epoch;   //  80 Solana field; always 0 here
  uint64_t created_lsn;  //  88 LSN of the operation that created the account
  uint32_t slot;         //  96 this record's own slot: a misplaced copy is detected
  uint32_t flags;        // 100 bit 0: executable (Solana); always 0 here
  uint32_t data_len;     // 104 Solana account data length; always 0 (no data area)
  uint32_t version;      // 108 kAccountVersion; never 0, so a valid record is never all zero
  uint8_t reserved[12];  // 112 zero
  uint32_t crc;          // 124 CRC-32C of bytes [0,124)
};
static_assert(sizeof(AccountRecord) == kAccountSize, "account record is 128 bytes");
static_assert(offsetof(AccountRecord, lamports) == 32, "balance at 32");
static_assert(offsetof(AccountRecord, lsn) == 40, "lsn at 40");
static_assert(offsetof(AccountRecord, owner) == 48, "owner at 48");
static_assert(offsetof(AccountRecord, rent_epoch) == 80, "rent_epoch at 80");
static_assert(offsetof(AccountRecord, created_lsn) == 88, "created_lsn at 88");
static_assert(offsetof(AccountRecord, slot) == 96, "slot at 96");
static_assert(offsetof(AccountRecord, flags) == 100, "flags at 100");
static_assert(offsetof(AccountRecord, data_len) == 104, "data_len at 104");
static_assert(offsetof(AccountRecord, version) == 108, "version at 108");
static_assert(offsetof(AccountRecord, crc) == 124, "crc at 124");
constexpr uint32_t kAccountCrcLen = 124;

// The hard limit of a shard: 2^27 accounts (16 GiB of account file). Each
// shard reserves address space for this much once, at open (PROT_NONE, no
// memory, no swap), and maps the file's pages at fixed addresses inside it as
// the file grows, so the mapping never moves and pointers into it stay valid.
// 4096 shards (the most a ledger may have) reserve 64 TiB, half of the 128 TiB
// a process has on x86-64 and arm64 with 4-level page tables; a larger limit
// would not fit. The index for it, 2^28 entries, keeps a load factor of one half.
constexpr uint32_t kMaxAccountsPerShard = 1u << 27;
// Growth of the account file: doubling while small, then this many slots
// (16 MiB) at a time, so that allocating a step stays well under a millisecond
// on a local disk; ends are rounded up to whole pages.
constexpr uint32_t kDataGrowMaxSlots = 1u << 17;
inline uint32_t NextDataCapacity(uint32_t capacity) {
  constexpr uint32_t kSlotsPerPage = 4096 / kAccountSize;
  uint64_t step = capacity < kDataGrowMaxSlots ? capacity : kDataGrowMaxSlots;
  uint64_t next = (uint64_t(capacity) + step + kSlotsPerPage - 1) / kSlotsPerPage * kSlotsPerPage;
  return next > kMaxAccountsPerShard ? kMaxAccountsPerShard : static_cast<uint32_t>(next);
}

// ---------------------------------------------------------------- WAL
// Each shard has two log files, one per log generation: the records of epoch e
// live in shard_NNN.<e & 1>.wal (WalFileName). While the checkpoint of epoch
// e+1 runs in the background, operations go to the file of e+1 and the file of
// e is kept: a page torn by the write-back is repaired from it. Record 0 of a
// file is a HEADER naming its epoch; only records of the manifest's epoch and
// the next are ever replayed, so bytes left over from an earlier epoch can
// never come back. A file may end in zeros (space is pre-extended in chunks), a
// torn record, or garbage: docs/durability.md gives the recovery rules.
constexpr uint32_t kWalRecordSize = 224;
constexpr uint32_t kWalMagic = 0x57324c47;  // "GL2W" read as bytes: 'G' 'L' '2' 'W'
constexpr uint32_t kWalGenerations = 2;     // log files per shard
enum WalType : uint32_t {
  kWalHeader = 1,  // first record of a file; account is zero
  kWalMint = 2,    // account = post-image of the credited account
  kWalDebit = 3,   // transfer leg 0: post-image of `from`
  kWalCredit = 4,  // transfer leg 1: post-image of `to`
  kWalImage = 5,   // wal:false checkpoint journal: one record per account of a dirty page
};
struct WalRecord {
  uint32_t magic;        //   0 kWalMagic
  uint64_t timestamp;    //   4 ms since the Unix epoch, informational (unaligned on purpose: seed layout)
  uint32_t type;         //  12 WalType
  uint32_t crc;          //  16 CRC-32C of bytes [0,16) then [20,224)
  AccountRecord account; //  20 post-image of the account (zero for HEADER)
  uint64_t lsn;          // 148 transaction LSN (global across shards, from 1)
  uint64_t epoch;        // 156 epoch of the log generation this record belongs to
  uint32_t shard;        // 164 shard this file belongs to
  uint32_t slot;         // 168 slot of `account` in the shard
  uint32_t legs;         // 172 records that make up transaction `lsn` across all shards
  uint32_t leg;          // 176 index of this record within its transaction
  uint64_t amount;       // 180 amount of the operation (audit; replay uses the image)
  uint64_t durable_lsn;  // 188 every record of every log with an LSN <= this was on stable
                         //     storage when this record was written (0 in a HEADER): a damaged
                         //     record that a later record proves durable is CORRUPTION, not a torn tail
  uint64_t supply[2];    // 196 IMAGE only (zero in others): the supply at the journal's LSN, u128, low word
                         //     first; the wal:false journal replaces a checkpoint, supply included
  uint8_t reserved[12];  // 212 zero
} __attribute__((packed));
static_assert(sizeof(WalRecord) == kWalRecordSize, "WAL record is 224 bytes");
static_assert(offsetof(WalRecord, timestamp) == 4, "timestamp at 4");
static_assert(offsetof(WalRecord, type) == 12, "type at 12");
static_assert(offsetof(WalRecord, crc) == 16, "crc at 16");
static_assert(offsetof(WalRecord, account) == 20, "account image at 20");
static_assert(offsetof(WalRecord, lsn) == 148, "lsn at 148");
static_assert(offsetof(WalRecord, epoch) == 156, "epoch at 156");
static_assert(offsetof(WalRecord, shard) == 164, "shard at 164");
static_assert(offsetof(WalRecord, slot) == 168, "slot at 168");
static_assert(offsetof(WalRecord, legs) == 172, "legs at 172");
static_assert(offsetof(WalRecord, leg) == 176, "leg at 176");
static_assert(offsetof(WalRecord, amount) == 180, "amount at 180");
static_assert(offsetof(WalRecord, durable_lsn) == 188, "durable_lsn at 188");
static_assert(offsetof(WalRecord, supply) == 196, "supply at 196");

// ---------------------------------------------------------------- index
// index_NNN.bin: a 4096-byte header, a table of one CRC per entry page (padded
// to 4096), then `capacity` 8-byte entries in 4096-byte pages. Entry = slot+1
// (0 = empty) and the key's 32-bit hash as a tag. Linear probing. The file is
// valid only for the checkpoint whose epoch it names; pages are verified by
// their CRC the first time they are touched, so opening is O(1) in its size.
// The header's capacity is the shard's: it starts at the manifest's
// index_capacity and doubles as the shard grows (a checkpoint writes the
// doubled table whole, in the layout of its capacity).
constexpr uint32_t kIndexMagic = 0x58494c47;  // "GLIX"
constexpr uint32_t kIndexVersion = 1;
constexpr uint32_t kPageSize = 4096;
constexpr uint32_t kEntriesPerPage = kPageSize / 8;
constexpr uint32_t kMaxIndexCapacity = 2 * kMaxAccountsPerShard;
// Index growth, the same in both engines so that they leave the same files: once
// count >= capacity / kIndexLoadDivisor a table of twice the capacity takes new
// keys, and every insert then moves the entries of kRehashEntriesPerInsert
// positions of the old table, in order (an incremental rehash: lookups consult
// both tables meanwhile). The old table is drained after capacity / 8 inserts,
// long before the new one reaches the same load.
constexpr uint32_t kIndexLoadDivisor = 2;
constexpr uint32_t kRehashEntriesPerInsert = 8;
struct IndexEntry {
  uint32_t slot_plus_1;
  uint32_t tag;
};
static_assert(sizeof(IndexEntry) == 8, "index entry is 8 bytes");
struct IndexHeader {
  uint32_t magic;          //  0
  uint32_t version;        //  4
  uint32_t shard;          //  8
  uint32_t capacity;       // 12 entries, a power of two
  uint32_t count;          // 16 accounts in the shard
  uint32_t page_count;     // 20 capacity / 512
  uint64_t epoch;          // 24 checkpoint epoch this index is exact for
  uint64_t checkpoint_lsn; // 32
  uint32_t seed;           // 40 hash seed (from the manifest)
  uint32_t table_crc;      // 44 CRC-32C of the page-CRC table
  uint8_t reserved[12];    // 48
  uint32_t crc;            // 60 CRC-32C of bytes [0,60)
};
static_assert(sizeof(IndexHeader) == 64, "index header is 64 bytes");
static_assert(offsetof(IndexHeader, count) == 16, "count at 16");
static_assert(offsetof(IndexHeader, epoch) == 24, "epoch at 24");
static_assert(offsetof(IndexHeader, table_crc) == 44, "table_crc at 44");
static_assert(offsetof(IndexHeader, crc) == 60, "crc at 60");
constexpr uint32_t kIndexHeaderCrcLen = 60;

inline uint64_t IndexTableBytes(uint32_t page_count) {
  return (uint64_t(page_count) * 4 + kPageSize - 1) / kPageSize * kPageSize;
}
inline uint64_t IndexFileBytes(uint32_t capacity) {
  uint32_t pages = capacity / kEntriesPerPage;
  return kPageSize + IndexTableBytes(pages) + uint64_t(capacity) * 8;
}

// ---------------------------------------------------------------- manifest
// MANIFEST: 64 bytes, replaced atomically (write MANIFEST.tmp, fsync, rename,
// fsync the directory). Writing it is the commit point of a checkpoint.
// Version 2 added the supply; a version-1 manifest is refused (docs/formats.md).
constexpr uint32_t kManifestMagic = 0x464d4c47;  // "GLMF"
constexpr uint32_t kManifestVersion = 2;
struct Manifest {
  uint32_t magic;              //  0
  uint32_t version;            //  4
  uint32_t shards;             //  8
  uint32_t accounts_per_shard; // 12 initial capacity of each shard (shards grow: the file size says)
  uint32_t index_capacity;     // 16 initial entries per shard index (the index header says the current)
  uint32_t seed;               // 20 hash seed
  uint64_t epoch;              // 24 current log epoch
  uint64_t checkpoint_lsn;     // 32 every operation <= this is in the shard files
  uint64_t supply[2];          // 40 total minted by the operations <= checkpoint_lsn: u128, low word first
  uint8_t reserved[4];         // 56
  uint32_t crc;                // 60 CRC-32C of bytes [0,60)
};
static_assert(sizeof(Manifest) == 64, "manifest is 64 bytes");
static_assert(offsetof(Manifest, epoch) == 24, "epoch at 24");
static_assert(offsetof(Manifest, checkpoint_lsn) == 32, "checkpoint_lsn at 32");
static_assert(offsetof(Manifest, supply) == 40, "supply at 40");
static_assert(offsetof(Manifest, crc) == 60, "crc at 60");
// The supply (a u128) as the two words the MANIFEST and IMAGE records hold.
using u128 = unsigned __int128;
inline u128 GetSupply(const uint64_t (&w)[2]) { return (u128(w[1]) << 64) | w[0]; }
inline void SetSupply(uint64_t (&w)[2], u128 v) {
  w[0] = static_cast<uint64_t>(v);
  w[1] = static_cast<uint64_t>(v >> 64);
}

// ---------------------------------------------------------------- batches
constexpr uint32_t kMintOpSize = 40;      // pubkey[32] amount u64
constexpr uint32_t kTransferOpSize = 72;  // from[32] to[32] amount u64

// Operation statuses: the byte in a batch status array, and the code behind a
// LedgerError. src/errors.ts holds the names.
enum Status : uint8_t {
  kOk = 0,
  kInvalidPubkey = 1,
  kInvalidAmount = 2,
  kSameAccount = 3,
  kAccountNotFound = 4,
  kInsufficientFunds = 5,
  kOverflow = 6,
  kCapacityExceeded = 7,
  kCorruption = 8,
  kIoError = 9,
  kClosed = 10,
  kLocked = 11,
};

}  // namespace gl
