import { Account as F } from './format';

/** One account, decoded from its 128-byte record (native/format.h, docs/formats.md). */
export interface Account {
  pubkey: Uint8Array;
  balance: bigint;
  /** LSN of the last operation that changed the account. */
  lsn: bigint;
  /** LSN of the operation that created it. */
  createdLsn: bigint;
  /** Owning program (Solana field; all zero). */
  owner: Uint8Array;
  rentEpoch: bigint;
  executable: boolean;
  /** Slot of the record in its shard file. */
  slot: number;
}

/** Decodes a record image; copies what it keeps, so `image` may be reused at once. */
export function decodeAccount(image: Uint8Array): Account {
  return decodeWith(image, new DataView(image.buffer, image.byteOffset, 128));
}

/**
 * decodeAccount with the image's DataView given (the ledger keeps one for its scratch image). Per call it allocates
 * the object, the pubkey's copy and the bigints that are not zero: the owner and rentEpoch fields are all zero in
 * every record the ledger writes, and a zero owner is a fresh zeroed array rather than a copy, rentEpoch the
 * constant 0n (a bigint is a value: nothing can change it).
 */
export function decodeWith(image: Uint8Array, v: DataView): Account {
  let ownerZero = true;
  for (let o = F.OWNER; o < F.OWNER + 32; o += 4) {
    if (v.getUint32(o, true) !== 0) {
      ownerZero = false;
      break;
    }
  }
  const rentZero = v.getUint32(F.RENT_EPOCH, true) === 0 && v.getUint32(F.RENT_EPOCH + 4, true) === 0;
  return {
    pubkey: image.slice(F.PUBKEY, F.PUBKEY + 32),
    balance: v.getBigUint64(F.LAMPORTS, true),
    lsn: v.getBigUint64(F.LSN, true),
    createdLsn: v.getBigUint64(F.CREATED_LSN, true),
    owner: ownerZero ? new Uint8Array(32) : image.slice(F.OWNER, F.OWNER + 32),
    rentEpoch: rentZero ? 0n : v.getBigUint64(F.RENT_EPOCH, true),
    executable: (v.getUint32(F.FLAGS, true) & 1) === 1,
    slot: v.getUint32(F.SLOT, true),
  };
}
