// A real 3-node NATS JetStream cluster on 127.0.0.1 for the replication tests, the cluster demo and the
// replication benchmark: `nats-server` processes (the Debian package), each with its config file, store and log
// in one temporary directory; stopped by pid. Plain ESM so that scripts run it under bare node.
//
//   const cluster = await startCluster({ nodes: 3 });
//   cluster.servers        // ['nats://127.0.0.1:PORT', ...]
//   await cluster.kill(1)  // SIGKILL one node (a crash); cluster.start(1) brings it back with its store
//   await cluster.stop()   // every node, then the directory
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { spawn, spawnSync } from 'node:child_process';

const BINARY = process.env.NATS_SERVER || 'nats-server';

/** Whether nats-server can run here; { ok, reason }. */
export function natsAvailable() {
  const r = spawnSync(BINARY, ['--version'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) return { ok: false, reason: `${BINARY} is not installed (Debian: apt-get install nats-server)` };
  return { ok: true, reason: r.stdout.trim() };
}

/** A port nothing listens on now (bound and released; the cluster binds it right after). */
async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function canConnect(port) {
  return new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1');
    sock.once('connect', () => {
      sock.destroy();
      resolve(true);
    });
    sock.once('error', () => resolve(false));
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function startCluster({ nodes = 3, name = 'gl', label = 'nats' } = {}) {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), `gl-${label}-`));
  const ports = [];
  for (let i = 0; i < nodes; i++) ports.push({ client: await freePort(), cluster: await freePort() });
  const procs = new Array(nodes).fill(null);
  const confs = ports.map((p, i) => {
    const dir = path.join(root, `n${i}`);
    fs.mkdirSync(dir, { recursive: true });
    const routes = ports.filter((_, j) => j !== i).map((q) => `nats://127.0.0.1:${q.cluster}`);
    const conf = path.join(root, `n${i}.conf`);
    fs.writeFileSync(conf, [
      `server_name: n${i}`,
      `listen: 127.0.0.1:${p.client}`,
      'max_payload: 8MB',
      `jetstream { store_dir: "${path.join(dir, 'store')}", max_memory_store: 64MB, max_file_store: 4GB }`,
      `cluster { name: ${name}, listen: 127.0.0.1:${p.cluster}, routes: [${routes.join(', ')}] }`,
      '',
    ].join('\n'));
    return { conf, log: path.join(root, `n${i}.log`) };
  });

  const start = async (i) => {
    if (procs[i]) return;
    const child = spawn(BINARY, ['-c', confs[i].conf, '-l', confs[i].log], { stdio: 'ignore', detached: false });
    procs[i] = child;
    child.once('exit', () => {
      if (procs[i] === child) procs[i] = null;
    });
    for (let t = 0; t < 200 && !(await canConnect(ports[i].client)); t++) await sleep(25);
  };
  const kill = async (i, signal = 'SIGKILL') => {
    const child = procs[i];
    if (!child) return;
    const gone = new Promise((r) => child.once('exit', r));
    process.kill(child.pid, signal);
    await gone;
    procs[i] = null;
  };
  const cluster = {
    root,
    servers: ports.map((p) => `nats://127.0.0.1:${p.client}`),
    pids: () => procs.map((p) => p?.pid ?? null),
    start,
    kill,
    /** Waits until JetStream answers with a meta leader: an R<nodes> stream can be created and deleted. */
    async ready(timeoutMs = 30_000) {
      const { connect } = await import('@nats-io/transport-node');
      const { jetstreamManager } = await import('@nats-io/jetstream');
      const nc = await connect({ servers: cluster.servers, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
      const until = Date.now() + timeoutMs;
      let last;
      try {
        for (;;) {
          try {
            const jsm = await jetstreamManager(nc, { timeout: 2000 });
            const probe = `probe_${process.pid}_${Date.now()}`;
            await jsm.streams.add({ name: probe, subjects: [`${probe}.x`], num_replicas: Math.min(3, procs.filter(Boolean).length) });
            await jsm.streams.delete(probe);
            return;
          } catch (e) {
            last = e;
            if (Date.now() > until) throw new Error(`JetStream cluster not ready after ${timeoutMs} ms: ${e?.message ?? e}`);
            await sleep(200);
          }
        }
      } finally {
        await nc.close().catch(() => {});
        void last;
      }
    },
    async stop() {
      for (let i = 0; i < nodes; i++) await kill(i, 'SIGKILL');
      fs.rmSync(root, { recursive: true, force: true });
    },
  };
  try {
    for (let i = 0; i < nodes; i++) await start(i);
    await cluster.ready();
  } catch (e) {
    await cluster.stop();
    throw e;
  }
  return cluster;
}
