#!/usr/bin/env node
// Child process for the cross-engine crash tests: runs a seeded plan (workload.mjs) against a ledger
// with the engine it is told, until it is killed (or reaches the end and hangs).
//
//   node writer.mjs --module DIST --dir D --engine native|js --seed S --ops N [--shards 4] [--aps 1000]
//                   [--wal 1|0] [--sync-every N] [--ckpt-every N] [--keys N] [--crash-at POINT [--warmup N]]
//                   [--hold-at N]
//
// stdout, written with write(2) after the fact, so what the parent reads is a lower bound:
//   `ready`, then `ack <ops> <lsn>` after every step, `ckpt <ops> <lsn>` after a checkpoint returned,
//   `crashing <ops> <lsn>` just before a checkpoint() that GL_CRASH_AT must kill, `done` at the end.
// --hold-at N: after the step that brings the count to N or more, print `held <ops> <lsn>` and block
// (the parent kills it there, between two operations).
// --crash-at POINT [--warmup N]: the ledger is created and runs the plan without the hook until N
// operations are done (default 0), then it is closed and reopened with GL_CRASH_AT set (`reopened
// <ops> <lsn>`), so that neither the creation checkpoint nor the warm-up fires it.
// Every status is checked against the model; a disagreement exits with code 3.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import { Model, makeKeys, makePlan, mintOps, transferOps } from './workload.mjs';

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
const { Ledger, LedgerError, BatchStatus } = createRequire(import.meta.url)(args.module);
const statusName = new Map(Object.entries(BatchStatus).map(([k, v]) => [v, k]));
const out = (line) => fs.writeSync(1, line + '\n');

const seed = Number(args.seed ?? 1);
const nkeys = Number(args.keys ?? 300);
const keys = makeKeys(seed, nkeys);
const plan = makePlan({ seed, ops: Number(args.ops ?? 5000), keys: nkeys, checkpointEvery: Number(args['ckpt-every'] ?? 0) });
const options = {
  engine: args.engine,
  shards: Number(args.shards ?? 4),
  accountsPerShard: Number(args.aps ?? 1000),
  wal: args.wal !== '0',
  syncEvery: Number(args['sync-every'] ?? 1000),
};

const crashAt = args['crash-at'];
const warmup = Number(args.warmup ?? 0);
const holdAt = args['hold-at'] === undefined ? undefined : Number(args['hold-at']);
delete process.env.GL_CRASH_AT;
let ledger = await Ledger.open(args.dir, options);
let armed = false;
out('ready');

const model = new Model(nkeys);
let done = 0;
const check = (op, got) => {
  const want = model.apply(op);
  if (want !== got) {
    out(`error op ${done}: model ${want}, ledger ${got}`);
    process.exit(3);
  }
  done++;
};
for (const step of plan) {
  if (crashAt && !armed && done >= warmup) {
    await ledger.close();
    process.env.GL_CRASH_AT = crashAt;
    ledger = await Ledger.open(args.dir, options);
    armed = true;
    out(`reopened ${done} ${model.lsn}`);
  }
  if (step.t === 'mint' || step.t === 'transfer') {
    const op = step.ops[0];
    let got = 'OK';
    try {
      if (op.k === 'mint') ledger.mint(keys[op.to], op.amount);
      else ledger.transfer(keys[op.from], keys[op.to], op.amount);
    } catch (e) {
      if (!(e instanceof LedgerError)) throw e;
      got = e.code;
    }
    check(op, got);
  } else if (step.t === 'mintBatch' || step.t === 'transferBatch') {
    const st = step.t === 'mintBatch' ? ledger.mintBatch(mintOps(keys, step.ops)) : ledger.transferBatch(transferOps(keys, step.ops));
    step.ops.forEach((op, i) => check(op, statusName.get(st[i])));
  } else if (step.t === 'sync' && options.wal) {
    await ledger.sync();
  } else if (step.t === 'checkpoint' || step.t === 'sync') {
    // (with wal off, sync() is a checkpoint)
    if (armed) out(`crashing ${done} ${model.lsn}`);
    await (step.t === 'sync' ? ledger.sync() : ledger.checkpoint());
    out(`ckpt ${done} ${model.lsn}`);
    if (armed) {
      out('survived');
      process.exit(4);
    }
  }
  out(`ack ${done} ${model.lsn}`);
  if (holdAt !== undefined && done >= holdAt) {
    // Stop between two operations and wait to be killed.
    out(`held ${done} ${model.lsn}`);
    for (;;) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60_000);
  }
  // Let the pool's fsync callbacks and timers run now and then, as a real program would.
  if (done % 7 === 0) await new Promise((r) => setImmediate(r));
}
out('done');
setInterval(() => {}, 1000);
