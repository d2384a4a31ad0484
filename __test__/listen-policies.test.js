'use strict';
// listen() in workers under each scheduling policy. Every case runs in its own
// primary (fixtures/listen-fixture.js) because the policy is frozen per
// primary process; the fixture prints one JSON result line that we assert on.
const { describe, test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { fixtureRunner, runOnce, assertOk, startFixture } = require('./helpers');

const FIXTURE = path.join(__dirname, 'fixtures', 'listen-fixture.js');
const HOLD_FIXTURE = path.join(__dirname, 'fixtures', 'listen-hold-fixture.js');
const FIXTURE_TIMEOUT_MS = 20000;
const POLICIES = ['rr', 'none', 'reuseport'];

// Fixture primaries still running are killed in `after` whatever happened.
const runResult = fixtureRunner(FIXTURE, FIXTURE_TIMEOUT_MS);

function runFixture(policy, scenario, ...args) {
  const env = { ...process.env, NODE_CLUSTER_SCHED_POLICY: policy };
  return runResult(`${policy}/${scenario}`, [scenario, ...args], env);
}

// Runs a fixture once, for several tests that assert on its result.
function shared(policy, scenario, ...args) {
  return runOnce(() => {
    if (scenario === 'pipe') {
      try { fs.unlinkSync(args[0]); } catch { /* not there */ }
    }
    return runFixture(policy, scenario, ...args);
  });
}

function sum(obj) {
  return Object.values(obj).reduce((a, b) => a + b, 0);
}

// IPv6 loopback may be missing (containers without IPv6): check first.
let ipv6 = { ok: false, why: 'not checked' };
before(async () => {
  ipv6 = await new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', (e) => resolve({ ok: false, why: `cannot bind ::1 on this machine (${e.code})` }));
    s.listen(0, '::1', () => s.close(() => resolve({ ok: true })));
  });
});

// A port held by a plain server in this process, for EADDRINUSE.
let busy;
before(async () => {
  busy = net.createServer();
  await new Promise((resolve, reject) => {
    busy.once('error', reject);
    busy.listen(0, '127.0.0.1', resolve);
  });
});
after(() => busy && busy.close());

for (const policy of POLICIES) {
  describe(`policy ${policy}`, () => {
    // These two fixtures run once each; several tests assert on each result.
    const http = shared(policy, 'http');
    const sock = path.join(os.tmpdir(), `rcluster-listen-${process.pid}-${policy}.sock`);
    const pipe = shared(policy, 'pipe', sock);
    after(() => {
      try { fs.unlinkSync(sock); } catch { /* gone, as it should be */ }
    });

    test('2 workers listen(0, 127.0.0.1): same port, reported by listening events', async () => {
      const r = await http();
      assertOk(r);
      assert.equal(r.policy, policy);
      const ports = r.reported.map((x) => x.port);
      assert.equal(ports.length, 2);
      assert.ok(ports[0] > 0, `port ${ports[0]}`);
      assert.equal(ports[1], ports[0], `workers got different ports: ${ports}`);
      assert.deepEqual(r.reported.map((x) => x.address), ['127.0.0.1', '127.0.0.1']);
      assert.equal(r.listeningEvents.length, 2);
      for (const ev of r.listeningEvents) {
        assert.deepEqual(ev.address, { addressType: 4, address: '127.0.0.1', port: ports[0] });
      }
    });

    test('40 sequential Connection: close requests all succeed' +
      (policy === 'none' ? '' : ' and reach every worker'), async () => {
      const r = await http();
      assertOk(r);
      assert.deepEqual(r.failures, []);
      assert.equal(r.succeeded, 40);
      assert.equal(sum(r.served), 40);
      if (policy !== 'none') {
        for (const id of r.workerIds) {
          assert.ok(r.served[`w${id}`] >= 1, `worker ${id} got no connection: ${JSON.stringify(r.served)}`);
        }
      }
    });

    test('workers still answer messages after serving (no worker stuck in accept)', async () => {
      const r = await http();
      assertOk(r);
      assert.deepEqual(r.pingAfterRequests, Object.fromEntries(r.workerIds.map((id) => [`w${id}`, 'pong'])));
    });

    test('listening sockets handed to workers are non-blocking, as libuv requires', async () => {
      // node:cluster hands workers libuv-created (O_NONBLOCK) sockets; libuv
      // does not set O_NONBLOCK on a listening fd it receives over IPC. A
      // blocking shared socket makes a worker that loses the accept() race
      // block in the kernel (event loop frozen). Round-robin workers get no
      // listening fd (null).
      for (const [what, run] of [['TCP', http], ['Unix socket', pipe]]) {
        const r = await run();
        assertOk(r);
        for (const flags of r.listenFdFlags) {
          if (policy === 'rr') assert.equal(flags, null, what);
          else assert.equal(flags && flags.nonblock, true, `${what} listening fd flags ${JSON.stringify(flags)}`);
        }
      }
    });

    test('listen(0) with no host works', async () => {
      const r = await runFixture(policy, 'nohost');
      assertOk(r);
      const ports = r.reported.map((x) => x.port);
      assert.ok(ports[0] > 0);
      assert.equal(ports[1], ports[0]);
      assert.deepEqual(r.failures, []);
      assert.equal(r.succeeded, 10);
    });

    test('IPv6 ::1', async (t) => {
      if (!ipv6.ok) {
        t.skip(`IPv6 unavailable: ${ipv6.why}`);
        return;
      }
      const r = await runFixture(policy, 'ipv6');
      assertOk(r);
      const ports = r.reported.map((x) => x.port);
      assert.ok(ports[0] > 0);
      assert.equal(ports[1], ports[0]);
      assert.deepEqual(r.reported.map((x) => [x.address, x.family]), [['::1', 'IPv6'], ['::1', 'IPv6']]);
      for (const ev of r.listeningEvents) {
        assert.deepEqual(ev.address, { addressType: 6, address: '::1', port: ports[0] });
      }
      assert.deepEqual(r.failures, []);
      assert.equal(r.succeeded, 10);
    });

    test('ipv6Only: true on :: leaves IPv4 alone', async (t) => {
      if (!ipv6.ok) {
        t.skip(`IPv6 unavailable: ${ipv6.why}`);
        return;
      }
      const r = await runFixture(policy, 'ipv6only');
      assertOk(r);
      const ports = r.reported.map((x) => x.port);
      assert.equal(ports[1], ports[0]);
      assert.deepEqual(r.failures, []);
      assert.equal(r.succeeded, 6);
      assert.equal(r.v4Connect, 'ECONNREFUSED', 'IPv4 connect to the IPv6-only port');
      assert.equal(r.v4Bind, 'bound', 'IPv4 bind of the same port must succeed');
    });

    test('Unix socket path: served, and removed after cluster.disconnect()', async () => {
      const r = await pipe();
      assertOk(r);
      assert.deepEqual(r.reported.map((x) => x.address), [sock, sock]);
      assert.equal(r.existsWhileListening, true);
      assert.deepEqual(r.failures, []);
      assert.equal(r.succeeded, 10);
      assert.equal(r.existsInDisconnectCallback, false, 'socket file still there in the disconnect callback');
      assert.equal(r.existsAfterDisconnect, false);
      assert.equal(fs.existsSync(sock), false, 'socket file left behind');
    });

    test('Unix socket path: workers still answer messages after serving (no worker stuck in accept)',
      async () => {
        const r = await pipe();
        assertOk(r);
        assert.deepEqual(r.pingAfterRequests, Object.fromEntries(r.workerIds.map((id) => [`w${id}`, 'pong'])));
      });

    test('UDP: 2 workers bind(0, 127.0.0.1) share a port and receive datagrams', async () => {
      const r = await runFixture(policy, 'udp');
      assertOk(r);
      const ports = r.reported.map((x) => x.port);
      assert.ok(ports[0] > 0);
      assert.equal(ports[1], ports[0]);
      assert.equal(r.answered, 10, `answered by ${JSON.stringify(r.answeredBy)}`);
      for (const who of Object.keys(r.answeredBy)) {
        assert.ok(r.workerIds.map((id) => `w${id}`).includes(who), who);
      }
    });

    test('exclusive: true gives each worker its own port (TCP and UDP)', async () => {
      const r = await runFixture(policy, 'exclusive');
      assertOk(r);
      const [a, b] = r.reported;
      assert.notEqual(a.port, b.port);
      assert.notEqual(a.udpPort, b.udpPort);
      r.perPort.forEach((p, i) => {
        assert.deepEqual(p.failures, []);
        assert.deepEqual(p.served, { [`w${r.workerIds[i]}`]: 3 });
      });
    });

    test('two servers in one worker get different ports, each shared by both workers', async () => {
      const r = await runFixture(policy, 'two-servers');
      assertOk(r);
      const [w1, w2] = r.reported;
      assert.notEqual(w1.ports[0], w1.ports[1]);
      assert.deepEqual(w2.ports, w1.ports);
      r.perServer.forEach((s, k) => {
        assert.deepEqual(s.failures, []);
        assert.equal(sum(s.served), 10);
        for (const body of s.bodies) assert.match(body, new RegExp(`^w\\d+-s${k}$`));
      });
    });

    test('bind errors reach the worker\'s server as Node\'s errors; the worker keeps running', async () => {
      const busyPort = busy.address().port;
      const r = await runFixture(policy, 'bind-errors', String(busyPort));
      assertOk(r);
      const [inUse, notAvail] = r.errors;
      assert.deepEqual(
        { code: inUse.code, syscall: inUse.syscall, errno: inUse.errno, address: inUse.address, port: inUse.port },
        { code: 'EADDRINUSE', syscall: 'bind', errno: -98, address: '127.0.0.1', port: busyPort });
      assert.deepEqual(
        { code: notAvail.code, syscall: notAvail.syscall, errno: notAvail.errno },
        { code: 'EADDRNOTAVAIL', syscall: 'bind', errno: -99 });
      assert.deepEqual(r.failures, [], 'a server listening after the errors serves');
      assert.deepEqual(r.served, { [`w${r.workerId}`]: 3 });
      assert.equal(r.pong, 'pong');
      assert.equal(r.exited, null, 'worker exited');
      assert.equal(r.alive, true);
      assert.deepEqual(r.workerErrors, []);
    });

    if (policy === 'rr') {
      test('a worker at maxConnections refuses (accepted: false); the connection goes to the other worker',
        async () => {
          // Node 20's worker refuses only when maxConnections is truthy
          // (`self.maxConnections && _connections >= maxConnections`), so
          // maxConnections = 0 never refuses; the fixture uses 1 and holds
          // one connection open to that worker.
          const r = await runFixture(policy, 'maxconn');
          assertOk(r);
          assert.ok(r.offered[r.refuser] >= 1,
            `the limited worker was never offered a connection: ${JSON.stringify(r.offered)}`);
          assert.deepEqual(r.failures, [], 'refused connections must be re-dispatched, not dropped');
          assert.equal(r.succeeded, 20);
          assert.equal(r.served[r.refuser], undefined, `refusing worker served: ${JSON.stringify(r.served)}`);
        });
    }
  });
}

// ------------------------------------------- listen options the primary applies --

// Starts listen-hold-fixture.js; resolves with its ready report plus stop(),
// which lets the primary (and with it the worker) go. killFixtures()
// (helpers.js) SIGKILLs both whatever happened (SIGKILL also ends a stopped
// process).
async function startHeld(label, env) {
  const fx = startFixture(HOLD_FIXTURE, { env, stdin: 'pipe' });
  let ready;
  try {
    ({ ready } = await fx.wait((m) => 'ready' in m, 'ready', FIXTURE_TIMEOUT_MS));
  } catch (e) {
    fx.kill();
    throw new Error(`${label}: ${e.message}`);
  }
  if (ready.error) {
    fx.kill();
    throw new Error(`${label}: ${ready.error}\nstderr: ${fx.stderr}`);
  }
  return { ...ready, stop: () => { fx.child.stdin.end(); return fx.waitExit(FIXTURE_TIMEOUT_MS); } };
}

// SIGSTOPs `pid` and waits until every thread of it is stopped, so none can
// still be inside accept(2) when the probe starts.
async function stopProcess(pid) {
  process.kill(pid, 'SIGSTOP');
  const deadline = Date.now() + 5000;
  for (;;) {
    const states = fs.readdirSync(`/proc/${pid}/task`).map((tid) => {
      const stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      return stat[stat.lastIndexOf(')') + 2];
    });
    if (states.every((st) => st === 'T')) return;
    if (Date.now() > deadline) throw new Error(`process ${pid} not stopped: thread states ${states}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

// Connects to a listener nobody accepts on, one client at a time, and counts
// the handshakes that complete. Linux queues backlog + 1 connections; once
// the queue is full it drops the next SYN (and every retransmission, as the
// queue stays full), so the count is exact and the last wait only decides
// how long to watch a client that cannot connect.
async function completedHandshakes(port, max) {
  const clients = [];
  let completed = 0;
  try {
    while (completed < max) {
      const connected = await new Promise((resolve) => {
        const c = net.connect({ host: '127.0.0.1', port });
        clients.push(c);
        const timer = setTimeout(() => resolve(false), 1500);
        c.once('connect', () => { clearTimeout(timer); resolve(true); });
        c.once('error', () => { clearTimeout(timer); resolve(false); });
      });
      if (!connected) break;
      completed++;
    }
  } finally {
    for (const c of clients) c.destroy();
  }
  return completed;
}

// The primary's listening socket under SCHED_RR (the worker's otherwise)
// must have the backlog the worker asked for: node:cluster listens in the
// primary with `backlog || 511` (ToInt32 of what the worker passed). The
// probe fills the accept queue with both processes stopped; it needs
// nothing beyond procfs (no `ss`). Checked against node:cluster: backlog 3
// -> 4 handshakes, '5' -> 6, none -> 512, under each of its policies.
describe('listen({ backlog }) sizes the accept queue', () => {
  const cases = [
    ...POLICIES.map((policy) => ({ policy, backlog: 3, expected: 4 })),
    { policy: 'rr', backlog: '5', expected: 6 },
    { policy: 'rr', backlog: undefined, expected: 512 },
  ];
  for (const { policy, backlog, expected } of cases) {
    test(`policy ${policy}: backlog ${JSON.stringify(backlog)} -> ${expected} queued connections`, async () => {
      const options = { port: 0, host: '127.0.0.1', backlog };
      const env = { ...process.env, NODE_CLUSTER_SCHED_POLICY: policy, LISTEN_OPTIONS: JSON.stringify([options]) };
      const held = await startHeld(`backlog/${policy}`, env);
      let completed;
      try {
        await stopProcess(held.primary);
        await stopProcess(held.worker);
        completed = await completedHandshakes(held.addresses[0].port, expected + 8);
      } finally {
        for (const pid of [held.primary, held.worker]) {
          try { process.kill(pid, 'SIGCONT'); } catch { /* gone */ }
        }
      }
      await held.stop();
      assert.equal(completed, expected);
    });
  }
});

// Node's primary chmods the socket file after listening under SCHED_RR (its
// default): with libuv < 1.51 (Node 20) read and/or write for everyone is
// added to what the umask left; since then the mode is exactly 0444, 0222 or
// 0666. rcluster does the same as the running Node under every policy
// (node:cluster ignores the options under SCHED_NONE; see README).
// node:cluster is the oracle here.
describe('listen({ path, readableAll, writableAll }) sets the socket file mode', () => {
  const FLAGS = [
    { name: 'neither' },
    { name: 'readableAll', readableAll: true },
    { name: 'writableAll', writableAll: true },
    { name: 'both', readableAll: true, writableAll: true },
  ];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rcluster-modes-'));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  // Modes (octal strings) by flag name, of one fixture run.
  async function modes(tag, umask, env) {
    const options = FLAGS.map(({ name, ...flags }) => ({
      path: path.join(dir, `${tag}-${umask}-${name}.sock`),
      ...flags,
    }));
    for (const o of options) fs.rmSync(o.path, { force: true });
    const held = await startHeld(`modes/${tag}`, {
      ...process.env, ...env, LISTEN_UMASK: umask, LISTEN_OPTIONS: JSON.stringify(options),
    });
    try {
      const mode = (file) => (fs.statSync(file).mode & 0o7777).toString(8);
      return Object.fromEntries(FLAGS.map((f, i) => [f.name, mode(options[i].path)]));
    } finally {
      await held.stop();
    }
  }

  for (const umask of ['022', '077']) {
    const nodeModes = runOnce(() => modes('node', umask, { LISTEN_CLUSTER: 'node', NODE_CLUSTER_SCHED_POLICY: 'rr' }));
    for (const policy of POLICIES) {
      test(`umask ${umask}, policy ${policy}: same modes as node:cluster`, async () => {
        const expected = await nodeModes();
        // What node:cluster gave when this test was written (Node 20, 22, 24).
        const [major, minor] = process.versions.uv.split('.').map(Number);
        const neither = umask === '022' ? '755' : '700';
        const known = major > 1 || minor >= 51
          ? { neither, readableAll: '444', writableAll: '222', both: '666' }
          : umask === '022'
            ? { neither, readableAll: '755', writableAll: '777', both: '777' }
            : { neither, readableAll: '744', writableAll: '722', both: '766' };
        assert.deepEqual(expected, known, 'node:cluster itself changed');
        assert.deepEqual(await modes(policy, umask, { NODE_CLUSTER_SCHED_POLICY: policy }), expected);
      });
    }
  }
});
