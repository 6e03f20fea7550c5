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
  const v = new DataView(image.buffer, image.byteOffset, 128);
  return {
    pubkey: image.slice(F.PUBKEY, F.PUBKEY + 32),
    balance: v.getBigUint64(F.LAMPORTS, true),
    lsn: v.getBigUint64(F.LSN, true),
    createdLsn: v.getBigUint64(F.CREATED_LSN, true),
    owner: image.slice(F.OWNER, F.OWNER + 32),
    rentEpoch: v.getBigUint64(F.RENT_EPOCH, true),
    executable: (v.getUint32(F.FLAGS, true) & 1) === 1,
    slot: v.getUint32(F.SLOT, true),
  };
}
