// The contenders of the peer comparison, behind one small interface so that insert.mjs,
// get.mjs and transfer.mjs run the same workload against each:
//
//   open(dir)                      create an empty store in dir
//   load(keys, start, count)       untimed population: accounts start..start+count-1 with INITIAL_BALANCE
//   prepInsert(keys, start, count) -> batch   (built outside the timed region)
//   insert(batch)                  one transaction of `count` new accounts
//   prepGet(keys, indices) -> batch;  get(batch)       point reads of existing accounts
//   prepTransfer(keys, pairs) -> batch;  transfer(batch)  read two balances, write both, per pair
//   balanceOf(keys, i)             for the post-run check
//   close()
//
// `mode` is 'durable' (a batch has reached stable storage when the call returns/resolves)
// or 'fast' (the contender's recommended non-fsync setting: survives a process crash, may
// lose recent commits on power loss). docs/benchmarks.md explains each configuration.
import path from 'node:path';
import { createRequire } from 'node:module';
import {
  INITIAL_BALANCE, Skip, keyViews, ledgerShape, mintBufferRange, keyBuffer, transferBuffer, loadLedger, openLedger,
} from './common.mjs';

const require = createRequire(import.meta.url);
const LOAD_CHUNK = 10_000;

function u64(buf) {
  return buf.readUInt32LE(0) + buf.readUInt32LE(4) * 4294967296;
}
function u64buf(v) {
  const b = Buffer.allocUnsafe(8);
  b.writeUInt32LE(v >>> 0, 0);
  b.writeUInt32LE(Math.floor(v / 4294967296), 4);
  return b;
}
function writeU64(b, v) {
  b.writeUInt32LE(v >>> 0, 0);
  b.writeUInt32LE(Math.floor(v / 4294967296), 4);
  return b;
}
function checkStatuses(st, ctx) {
  for (let i = 0; i < st.length; i++) if (st[i] !== 0) ctx.failed++;
}

// ------------------------------------------------------------------ geometric-ledger
function ledgerContender(engine, mode, n) {
  let mod, ledger;
  const ctx = { failed: 0 };
  const durable = mode === 'durable';
  let out;
  return {
    name: engine,
    config: durable
      ? `Ledger.open(dir, { engine: '${engine}', wal: true, syncEvery: 1000, shards: 16, accountsPerShard: ${ledgerShape(n).accountsPerShard} }); every batch is followed by \`await ledger.sync()\``
      : `Ledger.open(dir, { engine: '${engine}', wal: true, syncEvery: 1000, shards: 16, accountsPerShard: ${ledgerShape(n).accountsPerShard} }); batches are not awaited (background group commit every 1000 WAL records / 1000 ms)`,
    ctx,
    async: durable,
    async open(dir) {
      mod = await loadLedger();
      ledger = await openLedger(mod, dir, { engine, wal: true, syncEvery: 1000, ...ledgerShape(n) });
      out = Buffer.alloc(128 * 10_000);
    },
    async load(keys, start, count) {
      for (let s = 0; s < count; s += LOAD_CHUNK) {
        const n = Math.min(LOAD_CHUNK, count - s);
        checkStatuses(ledger.mintBatch(mintBufferRange(keys, start + s, n, INITIAL_BALANCE)), ctx);
      }
      await ledger.checkpoint();
    },
    prepInsert(keys, start, count) {
      return mintBufferRange(keys, start, count, INITIAL_BALANCE);
    },
    insert: durable
      ? async (buf) => { checkStatuses(ledger.mintBatch(buf), ctx); await ledger.sync(); }
      : (buf) => { checkStatuses(ledger.mintBatch(buf), ctx); },
    prepGet(keys, indices) {
      return keyBuffer(keys, indices);
    },
    get(buf) {
      ledger.getBatch(buf, out.subarray(0, (buf.length / 32) * 128));
    },
    prepTransfer(keys, pairs) {
      return transferBuffer(keys, pairs, 1);
    },
    transfer: durable
      ? async (buf) => { checkStatuses(ledger.transferBatch(buf), ctx); await ledger.sync(); }
      : (buf) => { checkStatuses(ledger.transferBatch(buf), ctx); },
    balanceOf(keys, i) {
      return Number(ledger.balance(keys.subarray(i * 32, i * 32 + 32)));
    },
    stats() {
      const s = ledger.stats();
      return { fsyncs: s.fsyncs, walBytes: s.walBytes, lsn: String(s.lsn) };
    },
    async close() {
      if (ledger) await ledger.close();
    },
  };
}

// ------------------------------------------------------------------ lmdb-js
function lmdbContender(mode) {
  let lmdb, db;
  const ctx = { failed: 0 };
  const durable = mode === 'durable';
  const val = u64buf(INITIAL_BALANCE);
  const scratch = Buffer.alloc(8);
  return {
    name: 'lmdb',
    config: durable
      ? "open({ keyEncoding: 'binary', encoding: 'binary', overlappingSync: false }); one `transactionSync` per batch (LMDB's synchronous commit: fsync before it returns)"
      : "open({ keyEncoding: 'binary', encoding: 'binary', noSync: true }); one `transactionSync` per batch",
    ctx,
    async: false,
    async open(dir) {
      try { lmdb = require('lmdb'); } catch (e) { throw new Skip(`lmdb not installed: ${e.message}`); }
      db = lmdb.open({
        path: path.join(dir, 'lmdb'),
        keyEncoding: 'binary',
        encoding: 'binary',
        ...(durable ? { overlappingSync: false } : { noSync: true }),
      });
    },
    async load(keys, start, count) {
      for (let s = 0; s < count; s += LOAD_CHUNK) {
        const n = Math.min(LOAD_CHUNK, count - s);
        db.transactionSync(() => {
          for (let i = 0; i < n; i++) db.putSync(keys.subarray((start + s + i) * 32, (start + s + i + 1) * 32), val);
        });
      }
    },
    prepInsert(keys, start, count) {
      return keyViews(keys, start, count);
    },
    insert(views) {
      db.transactionSync(() => {
        for (let i = 0; i < views.length; i++) db.putSync(views[i], val);
      });
    },
    prepGet(keys, indices) {
      return Array.from(indices, (k) => keys.subarray(k * 32, k * 32 + 32));
    },
    get(views) {
      for (let i = 0; i < views.length; i++) if (db.getBinaryFast(views[i]) === undefined) ctx.failed++;
    },
    prepTransfer(keys, pairs) {
      return Array.from(pairs, (k) => keys.subarray(k * 32, k * 32 + 32));
    },
    transfer(views) {
      db.transactionSync(() => {
        for (let i = 0; i < views.length; i += 2) {
          const fb = db.getBinaryFast(views[i]);
          if (fb === undefined) { ctx.failed++; continue; }
          const from = u64(fb);
          const tb = db.getBinaryFast(views[i + 1]);
          const to = tb === undefined ? 0 : u64(tb);
          if (from < 1) { ctx.failed++; continue; }
          db.putSync(views[i], writeU64(scratch, from - 1));
          db.putSync(views[i + 1], writeU64(scratch, to + 1));
        }
      });
    },
    balanceOf(keys, i) {
      const b = db.getBinary(keys.subarray(i * 32, i * 32 + 32));
      return b === undefined ? 0 : u64(b);
    },
    async close() {
      if (db) await db.close();
    },
  };
}

// ------------------------------------------------------------------ better-sqlite3
function sqliteContender(mode) {
  let db, ins, sel, upd, insTx, xferTx;
  const ctx = { failed: 0 };
  const durable = mode === 'durable';
  return {
    name: 'better-sqlite3',
    config:
      `journal_mode=WAL, synchronous=${durable ? 'FULL' : 'OFF'}, cache_size=128 MiB; ` +
      'accounts(pubkey BLOB PRIMARY KEY, balance INTEGER NOT NULL) WITHOUT ROWID; prepared statements, one `db.transaction()` per batch',
    ctx,
    async: false,
    async open(dir) {
      let Database;
      try { Database = require('better-sqlite3'); } catch (e) { throw new Skip(`better-sqlite3 not installed: ${e.message}`); }
      db = new Database(path.join(dir, 'ledger.sqlite'));
      db.pragma('journal_mode = WAL');
      db.pragma(`synchronous = ${durable ? 'FULL' : 'OFF'}`);
      db.pragma('cache_size = -131072');
      db.exec('CREATE TABLE accounts (pubkey BLOB PRIMARY KEY, balance INTEGER NOT NULL) WITHOUT ROWID');
      ins = db.prepare('INSERT INTO accounts (pubkey, balance) VALUES (?, ?)');
      sel = db.prepare('SELECT balance FROM accounts WHERE pubkey = ?').pluck();
      upd = db.prepare('UPDATE accounts SET balance = ? WHERE pubkey = ?');
      insTx = db.transaction((views) => {
        for (let i = 0; i < views.length; i++) ins.run(views[i], INITIAL_BALANCE);
      });
      xferTx = db.transaction((views) => {
        for (let i = 0; i < views.length; i += 2) {
          const from = sel.get(views[i]);
          if (from === undefined || from < 1) { ctx.failed++; continue; }
          const to = sel.get(views[i + 1]);
          upd.run(from - 1, views[i]);
          if (to === undefined) ins.run(views[i + 1], 1);
          else upd.run(to + 1, views[i + 1]);
        }
      });
    },
    async load(keys, start, count) {
      for (let s = 0; s < count; s += LOAD_CHUNK) insTx(keyViews(keys, start + s, Math.min(LOAD_CHUNK, count - s)));
      db.pragma('wal_checkpoint(TRUNCATE)');
    },
    prepInsert(keys, start, count) {
      return keyViews(keys, start, count);
    },
    insert(views) {
      insTx(views);
    },
    prepGet(keys, indices) {
      return Array.from(indices, (k) => keys.subarray(k * 32, k * 32 + 32));
    },
    get(views) {
      for (let i = 0; i < views.length; i++) if (sel.get(views[i]) === undefined) ctx.failed++;
    },
    prepTransfer(keys, pairs) {
      return Array.from(pairs, (k) => keys.subarray(k * 32, k * 32 + 32));
    },
    transfer(views) {
      xferTx(views);
    },
    balanceOf(keys, i) {
      return sel.get(keys.subarray(i * 32, i * 32 + 32)) ?? 0;
    },
    async close() {
      if (db) db.close();
    },
  };
}

// ------------------------------------------------------------------ classic-level
function levelContender(mode) {
  let db;
  const ctx = { failed: 0 };
  const durable = mode === 'durable';
  const writeOpts = { sync: durable };
  const val = u64buf(INITIAL_BALANCE);
  return {
    name: 'classic-level',
    config:
      `keyEncoding/valueEncoding 'buffer', default LevelDB options; one \`db.batch(ops, { sync: ${durable} })\` per batch; ` +
      'transfers: `getMany` of the 2,000 keys, then one batch of 2,000 puts',
    ctx,
    async: true,
    async open(dir) {
      let ClassicLevel;
      try { ({ ClassicLevel } = require('classic-level')); } catch (e) { throw new Skip(`classic-level not installed: ${e.message}`); }
      db = new ClassicLevel(path.join(dir, 'level'), { keyEncoding: 'buffer', valueEncoding: 'buffer' });
      await db.open();
    },
    async load(keys, start, count) {
      for (let s = 0; s < count; s += LOAD_CHUNK) {
        const n = Math.min(LOAD_CHUNK, count - s);
        const ops = new Array(n);
        for (let i = 0; i < n; i++) ops[i] = { type: 'put', key: keys.subarray((start + s + i) * 32, (start + s + i + 1) * 32), value: val };
        await db.batch(ops, writeOpts);
      }
    },
    prepInsert(keys, start, count) {
      const ops = new Array(count);
      for (let i = 0; i < count; i++) ops[i] = { type: 'put', key: keys.subarray((start + i) * 32, (start + i + 1) * 32), value: val };
      return ops;
    },
    async insert(ops) {
      await db.batch(ops, writeOpts);
    },
    prepGet(keys, indices) {
      return Array.from(indices, (k) => keys.subarray(k * 32, k * 32 + 32));
    },
    async get(views) {
      const vals = await db.getMany(views);
      for (let i = 0; i < vals.length; i++) if (vals[i] === undefined) ctx.failed++;
    },
    prepTransfer(keys, pairs) {
      return { views: Array.from(pairs, (k) => keys.subarray(k * 32, k * 32 + 32)), idx: pairs };
    },
    async transfer({ views, idx }) {
      const vals = await db.getMany(views);
      // Apply in order; an account can appear more than once in a batch, so keep a running balance.
      const bal = new Map();
      for (let i = 0; i < idx.length; i += 2) {
        const f = idx[i], t = idx[i + 1];
        const from = bal.has(f) ? bal.get(f) : vals[i] === undefined ? undefined : u64(vals[i]);
        if (from === undefined || from < 1) { ctx.failed++; continue; }
        const to = bal.has(t) ? bal.get(t) : vals[i + 1] === undefined ? 0 : u64(vals[i + 1]);
        bal.set(f, from - 1);
        bal.set(t, to + 1);
      }
      const ops = [];
      for (let i = 0; i < idx.length; i++) {
        const k = idx[i];
        const v = bal.get(k);
        if (v === undefined) continue;
        ops.push({ type: 'put', key: views[i], value: u64buf(v) });
        bal.delete(k); // one put per account
      }
      await db.batch(ops, writeOpts);
    },
    async balanceOfAsync(keys, i) {
      const b = await db.get(keys.subarray(i * 32, i * 32 + 32));
      return b === undefined ? 0 : u64(b);
    },
    async close() {
      if (db) await db.close();
    },
  };
}

export const CONTENDERS = ['native', 'js', 'lmdb', 'better-sqlite3', 'classic-level'];

/** n: the number of accounts of the workload (sizes the ledger's capacity). */
export function makeContender(name, mode, n) {
  switch (name) {
    case 'native': return ledgerContender('native', mode, n);
    case 'js': return ledgerContender('js', mode, n);
    case 'lmdb': return lmdbContender(mode);
    case 'better-sqlite3': return sqliteContender(mode);
    case 'classic-level': return levelContender(mode);
    default: throw new Error(`unknown contender ${name}`);
  }
}

/** balanceOf for every contender (classic-level reads are async). */
export async function balanceOf(c, keys, i) {
  return c.balanceOfAsync ? c.balanceOfAsync(keys, i) : c.balanceOf(keys, i);
}
