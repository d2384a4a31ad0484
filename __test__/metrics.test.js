'use strict';
// The metrics and health endpoint (setupPrimary({ metrics })): served by the
// Rust core, validated by promtool, scraped by a real Prometheus, answering
// while the primary's JavaScript is blocked, and ready only while every slot
// listens. promtool and prometheus are required (Debian package `prometheus`;
// .ci/run installs it): these tests fail, not skip, without them.

const { describe, it, afterEach, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { spawn, spawnSync } = require('node:child_process');
const cluster = require('..');
const { startFixture, killFixtures, trackCluster, isGone, freePort } = require('./helpers');
const { runCli, runToExit, stopCli } = require('./cli-helpers');

const FIXTURE = path.join(__dirname, 'fixtures', 'metrics-primary.js');
const CLI = path.join(__dirname, '..', 'bin', 'rcluster.js');
const APP = path.join(__dirname, 'fixtures', 'cli-app.js');
const tracked = trackCluster(cluster);

afterEach(killFixtures);
after(() => tracked.killAll());

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Our error and node:net's for the same failure: a bind's names the address,
// a lookup's the host name.
const LISTEN_FIELDS = ['message', 'code', 'errno', 'syscall', 'address', 'port'];
const LOOKUP_FIELDS = ['message', 'code', 'errno', 'syscall', 'hostname'];
function assertNodeError(ours, nodeErr, fields) {
  assert.ok(ours instanceof Error, 'an Error');
  for (const k of fields) assert.equal(ours[k], nodeErr[k], k);
}

function findTool(name) {
  const found = spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' });
  const where = found.stdout.trim();
  assert.ok(found.status === 0 && where,
    `${name} not found: install Debian's prometheus package (apt-get install -y prometheus; .ci/run does)`);
  return where;
}

// One GET (or `method`) with its status, body and duration; never throws.
function request({ address, port }, urlPath, { method = 'GET', timeout = 5000 } = {}) {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const req = http.request({ host: address, port, path: urlPath, method, agent: false, timeout }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body, ms: Date.now() - t0, at: Date.now() }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (error) => resolve({ status: 0, error: error.message, ms: Date.now() - t0, at: Date.now() }));
    req.end();
  });
}

// Repeats `get` every 50 ms until `pred` holds; the last answer otherwise.
async function pollUntil(get, pred, what, ms = 20000) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    last = await get();
    if (pred(last)) return last;
    await sleep(50);
  }
  assert.fail(`timed out after ${ms} ms waiting for ${what}; last: ${JSON.stringify(last)}`);
}

async function startPrimary(env = {}) {
  const fx = startFixture(FIXTURE, { stdin: 'pipe', env: { ...process.env, ...env } });
  const info = await fx.wait((m) => m.metrics, 'the metrics address', 20000);
  const send = (line) => fx.child.stdin.write(`${line}\n`);
  const workerPids = () => fx.messages.filter((m) => m.workerPid).map((m) => m.workerPid);
  return { fx, send, workerPids, metrics: info.metrics, appPort: info.appPort, js: { address: '127.0.0.1', port: info.jsPort } };
}

const ready = (m) => pollUntil(() => request(m, '/readyz'), (r) => r.status === 200, '/readyz 200');

// `name{labels} value` lines of an exposition, as [name, labels, value].
function samples(text) {
  return text.split('\n').filter((l) => l && !l.startsWith('#')).map((l) => {
    const m = /^([a-z_]+)(?:\{(.*)\})? (\S+)$/.exec(l);
    assert.ok(m, `not a sample line: ${l}`);
    return [m[1], m[2] || '', Number(m[3])];
  });
}


describe('setupPrimary({ metrics })', () => {
  it('validates the option with Node\'s error codes', () => {
    const bad = [
      [{ metrics: 'x' }, 'ERR_INVALID_ARG_TYPE'],
      [{ metrics: true }, 'ERR_INVALID_ARG_TYPE'],
      [{ metrics: {} }, 'ERR_SOCKET_BAD_PORT'],
      [{ metrics: { port: 70000 } }, 'ERR_SOCKET_BAD_PORT'],
      [{ metrics: { port: 1.5 } }, 'ERR_SOCKET_BAD_PORT'],
      [{ metrics: { port: 0, host: 1 } }, 'ERR_INVALID_ARG_TYPE'],
      [{ metrics: { port: 0, host: '127.0.0.1\u0000' } }, 'ERR_INVALID_ARG_VALUE'],
    ];
    for (const [options, code] of bad) {
      assert.throws(() => cluster.setupPrimary(options), { code }, JSON.stringify(options));
    }
    assert.equal(cluster.metricsAddress(), null);
  });

  it('binds an ephemeral port, reports it, refuses a taken port as listen() does, and closes', async () => {
    cluster.setupPrimary({ metrics: { port: 0 } });
    const addr = cluster.metricsAddress();
    assert.equal(addr.address, '127.0.0.1');
    assert.equal(addr.family, 'IPv4');
    assert.ok(addr.port > 0);
    assert.equal((await request(addr, '/healthz')).status, 200);
    // setupPrimary() again (fork() does it too) keeps the same endpoint.
    cluster.setupPrimary({});
    assert.deepEqual(cluster.metricsAddress(), addr);

    // A port node:net reports EADDRINUSE for: the same error, thrown.
    const holder = net.createServer();
    await new Promise((resolve) => holder.listen(0, '127.0.0.1', resolve));
    const taken = holder.address().port;
    const nodeErr = await new Promise((resolve) => {
      net.createServer().once('error', resolve).listen(taken, '127.0.0.1');
    });
    let ours;
    const sighup = process.listenerCount('SIGHUP');
    const settingsBefore = { ...cluster.settings };
    try {
      cluster.setupPrimary({ metrics: { host: '127.0.0.1', port: taken }, signals: true });
    } catch (err) {
      ours = err;
    }
    holder.close();
    assert.ok(ours, 'setupPrimary must throw for a taken port');
    // A setupPrimary() that throws changes nothing else (no signal handlers, settings as before).
    assert.equal(process.listenerCount('SIGHUP'), sighup);
    assert.deepEqual(cluster.settings, settingsBefore);
    assertNodeError(ours, nodeErr, LISTEN_FIELDS);
    assert.equal(cluster.metricsAddress(), null, 'the old endpoint was closed for the new one');
    assert.equal((await request(addr, '/healthz')).status, 0, 'nothing listens on the old port');

    cluster.setupPrimary({ metrics: { port: 0 } });
    const again = cluster.metricsAddress();
    assert.equal((await request(again, '/healthz')).status, 200);
    cluster.setupPrimary({ metrics: false });
    assert.equal(cluster.metricsAddress(), null);
    // (A connection the closing listener had queued is reset: closed, but not yet refused.)
    const closed = (r) => r.status === 0 && !/ECONNRESET/.test(r.error);
    const refused = await pollUntil(() => request(again, '/healthz'), closed, 'the endpoint closed', 3000);
    assert.match(refused.error, /ECONNREFUSED/);
  });

  it('a host name resolves on the core, as net.Server#listen resolves it: bound later, not in setupPrimary()',
    async () => {
      const node = net.createServer().listen(0, 'localhost');
      assert.equal(node.address(), null, 'node:net baseline: no address until the lookup is done');
      await new Promise((resolve) => node.once('listening', resolve));
      const nodeAddr = node.address();
      node.close();
      try {
        cluster.setupPrimary({ metrics: { host: 'localhost', port: 0 } });
        // The JS thread did not wait for the lookup (nor the bind after it).
        assert.equal(cluster.metricsAddress(), null);
        const addr = await pollUntil(async () => cluster.metricsAddress(), Boolean, 'the address once bound', 10000);
        assert.equal(addr.address, nodeAddr.address, 'the address getaddrinfo gives first, as node:net takes');
        assert.equal(addr.family, nodeAddr.family);
        assert.ok(addr.port > 0);
        assert.equal((await request(addr, '/healthz')).status, 200);
        // The same settings again keep the endpoint; a move closes it.
        cluster.setupPrimary({ metrics: { host: 'localhost', port: 0 } });
        assert.deepEqual(cluster.metricsAddress(), addr);
        cluster.setupPrimary({ metrics: { port: 0 } });
        assert.notEqual(cluster.metricsAddress(), null, 'a numeric host is bound in setupPrimary()');
        await pollUntil(() => request(addr, '/healthz'), (r) => r.status === 0, 'the named endpoint closed', 3000);
      } finally {
        cluster.setupPrimary({ metrics: false });
      }
    });

  it("a host name's port in use: node:net's EADDRINUSE, naming the address the name resolved to", async () => {
    // Hold the port on the address node:net takes for 'localhost' (127.0.0.1 here; ::1 elsewhere).
    const { address } = await require('node:dns').promises.lookup('localhost');
    const holder = net.createServer();
    await new Promise((resolve) => holder.listen(0, address, resolve));
    const taken = holder.address().port;
    try {
      const nodeErr = await new Promise((resolve) => {
        net.createServer().once('error', resolve).listen(taken, 'localhost');
      });
      assert.equal(nodeErr.code, 'EADDRINUSE', 'node:net baseline');
      assert.equal(nodeErr.address, address, 'node:net baseline: the resolved address, not the name');
      const viaError = new Promise((resolve) => cluster.once('error', resolve));
      cluster.setupPrimary({ metrics: { host: 'localhost', port: taken } });
      const ours = await viaError;
      assertNodeError(ours, nodeErr, LISTEN_FIELDS);
      assert.equal(cluster.metricsAddress(), null);
    } finally {
      holder.close();
      cluster.setupPrimary({ metrics: false });
    }
  });

  it('a scoped IPv6 host (::1%lo) is numeric, as net.isIP says: bound in setupPrimary(), as node:net binds it',
    async () => {
      const host = '::1%lo';
      assert.equal(net.isIP(host), 6, 'node:net baseline: an address');
      const node = net.createServer();
      await new Promise((resolve) => node.listen(0, host, resolve));
      const nodeAddr = node.address();
      try {
        cluster.setupPrimary({ metrics: { host, port: 0 } });
        const addr = cluster.metricsAddress();
        assert.ok(addr, 'bound before setupPrimary() returned');
        assert.deepEqual({ ...addr, port: 0 }, { ...nodeAddr, port: 0 });
        assert.equal((await request(addr, '/healthz')).status, 200);
        // The port node:net holds: thrown, naming the host as given, as node:net does.
        const taken = nodeAddr.port;
        const nodeErr = await new Promise((resolve) => net.createServer().once('error', resolve).listen(taken, host));
        let ours;
        try {
          cluster.setupPrimary({ metrics: { host, port: taken } });
        } catch (err) {
          ours = err;
        }
        assert.ok(ours, 'setupPrimary must throw for a taken port');
        assertNodeError(ours, nodeErr, LISTEN_FIELDS);
      } finally {
        node.close();
        cluster.setupPrimary({ metrics: false });
      }
    });

  it("a host name that does not resolve: node:net's ENOTFOUND, to cluster 'error' listeners, else a warning",
    async () => {
      const host = 'no-such-host.invalid';
      const nodeErr = await new Promise((resolve) => net.createServer().once('error', resolve).listen(0, host));
      assert.equal(nodeErr.code, 'ENOTFOUND', 'node:net baseline');
      const same = (ours) => assertNodeError(ours, nodeErr, LOOKUP_FIELDS);
      try {
        const viaError = new Promise((resolve) => cluster.once('error', resolve));
        cluster.setupPrimary({ metrics: { host, port: 0 } });
        assert.equal(cluster.metricsAddress(), null);
        same(await viaError);
        assert.equal(cluster.metricsAddress(), null, 'no endpoint after the failure');

        // Nobody listens for 'error': a process warning, never an uncaught 'error'.
        const viaWarning = new Promise((resolve) => process.once('warning', resolve));
        cluster.setupPrimary({ metrics: { host, port: 9 } });
        same(await viaWarning);
        assert.equal(cluster.metricsAddress(), null);

        // The primary carries on: a working endpoint after.
        cluster.setupPrimary({ metrics: { port: 0 } });
        assert.equal((await request(cluster.metricsAddress(), '/healthz')).status, 200);
      } finally {
        cluster.setupPrimary({ metrics: false });
      }
    });

  it("a lookup's other failures are named as dns.lookup names them, not all ENOTFOUND", async () => {
    // A name too long for getaddrinfo: libuv refuses it with EINVAL, whatever the resolver.
    for (const host of ['x'.repeat(300), 'no-such-host.invalid']) {
      const nodeErr = await new Promise((resolve) => net.createServer().once('error', resolve).listen(0, host));
      if (host.length === 300) assert.equal(nodeErr.code, 'EINVAL', 'node:net baseline: not ENOTFOUND');
      const viaError = new Promise((resolve) => cluster.once('error', resolve));
      try {
        cluster.setupPrimary({ metrics: { host, port: 0 } });
        const ours = await viaError;
        assertNodeError(ours, nodeErr, LOOKUP_FIELDS);
      } finally {
        cluster.setupPrimary({ metrics: false });
      }
    }
  });

  it('a move while a host name resolves wins: the earlier outcome is dropped', async () => {
    const errors = [];
    const onError = (e) => errors.push(e);
    cluster.on('error', onError);
    try {
      cluster.setupPrimary({ metrics: { host: 'no-such-host.invalid', port: 0 } });
      cluster.setupPrimary({ metrics: { port: 0 } });
      const addr = cluster.metricsAddress();
      assert.equal(addr.address, '127.0.0.1');
      // Long enough for the abandoned lookup to have failed: as long as the
      // same lookup takes here, and a margin for its outcome to travel.
      await require('node:dns').promises.lookup('no-such-host.invalid').catch(() => {});
      await sleep(300);
      assert.deepEqual(errors, [], 'no error for the abandoned name');
      assert.deepEqual(cluster.metricsAddress(), addr);
      assert.equal((await request(addr, '/healthz')).status, 200);
    } finally {
      cluster.off('error', onError);
      cluster.setupPrimary({ metrics: false });
    }
  });

  it('answers 404, 405 and 400 for what it does not serve', async () => {
    cluster.setupPrimary({ metrics: { port: 0 } });
    const addr = cluster.metricsAddress();
    try {
      assert.equal((await request(addr, '/')).status, 404);
      assert.equal((await request(addr, '/metrics/x')).status, 404);
      const post = await request(addr, '/metrics', { method: 'POST' });
      assert.equal(post.status, 405);
      assert.equal(post.headers.allow, 'GET');
      const raw = await new Promise((resolve, reject) => {
        const c = net.connect(addr.port, addr.address, () => c.end('NONSENSE\r\n\r\n'));
        let out = '';
        c.setEncoding('utf8').on('data', (d) => { out += d; }).on('end', () => resolve(out)).on('error', reject);
      });
      assert.match(raw, /^HTTP\/1\.1 400 /);
      const metrics = await request(addr, '/metrics?x=1');
      assert.equal(metrics.status, 200);
      assert.equal(metrics.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8');
    } finally {
      cluster.setupPrimary({ metrics: false });
    }
  });

  it('idle connections filling every slot give way to a probe: the oldest is closed', async () => {
    cluster.setupPrimary({ metrics: { port: 0 } });
    const addr = cluster.metricsAddress();
    const idle = [];
    try {
      // 64 clients that connect and never send a request head.
      for (let i = 0; i < 64; i++) {
        idle.push(await new Promise((resolve, reject) => {
          const c = net.connect(addr.port, addr.address, () => resolve(c)).on('error', reject);
          c.closedAt = null;
          c.on('close', () => { c.closedAt = Date.now(); });
          c.on('error', () => {});
        }));
      }
      await sleep(200); // every one of them holds a slot by now
      const t0 = Date.now();
      const probe = await request(addr, '/healthz', { timeout: 4000 });
      assert.equal(probe.status, 200, JSON.stringify(probe));
      assert.ok(probe.ms < 2000, `answered in ${probe.ms} ms, not after the 5 s head timeout`);
      await sleep(100);
      assert.ok(idle[0].closedAt !== null && idle[0].closedAt - t0 < 2000, 'the oldest idle client was closed');
      assert.equal(idle.slice(1).filter((c) => c.closedAt !== null).length, 0, 'only the oldest');
    } finally {
      for (const c of idle) c.destroy();
      cluster.setupPrimary({ metrics: false });
    }
  });
});

describe('the endpoint with workers', () => {
  it('/metrics passes promtool and reports the workers, slots and primary', async () => {
    const promtool = findTool('promtool');
    const p = await startPrimary();
    p.send('fork 2');
    await ready(p.metrics);
    // Heartbeats (hangTimeout) carry the lag: wait for one from each worker.
    const scrape = await pollUntil(() => request(p.metrics, '/metrics'),
      (r) => (r.body || '').split('\nrcluster_worker_heartbeat_lag_seconds{').length === 3, 'heartbeat lags');
    const check = spawnSync(promtool, ['check', 'metrics'], { input: scrape.body, encoding: 'utf8' });
    assert.equal(check.status, 0, `promtool check metrics:\n${check.stdout}${check.stderr}\n${scrape.body}`);
    assert.equal(`${check.stdout}${check.stderr}`.trim(), '', 'no lint remarks');

    const s = samples(scrape.body);
    const value = (name, labels = '') => s.find(([n, l]) => n === name && l === labels)?.[2];
    assert.equal(value('rcluster_workers'), 2);
    assert.equal(value('rcluster_ready'), 1);
    const pids = p.workerPids();
    const up = s.filter(([n]) => n === 'rcluster_worker_up');
    assert.deepEqual(up.map(([, l, v]) => [/slot="(\d)"/.exec(l)[1], Number(/pid="(\d+)"/.exec(l)[1]), v]).sort(),
      [['0', pids[0], 1], ['1', pids[1], 1]]);
    const labels = up[0][1];
    const now = Date.now() / 1000;
    assert.ok(Math.abs(value('rcluster_worker_start_time_seconds', labels) - now) < 60);
    assert.ok(value('rcluster_worker_resident_memory_bytes', labels) > 1e6);
    assert.ok(value('rcluster_worker_cpu_seconds_total', `${labels},mode="user"`) > 0);
    const lag = value('rcluster_worker_heartbeat_lag_seconds', labels);
    assert.ok(Number.isFinite(lag) && lag >= 0 && lag < 5, `heartbeat lag ${lag} s`);
    assert.equal(value('rcluster_worker_connections_handed_off_total', labels), 0);
    assert.equal(value('rcluster_slot_ready', 'slot="0"'), 1);
    assert.equal(value('rcluster_slot_restarts_total', 'slot="1"'), 0);
    assert.ok(value('rcluster_primary_resident_memory_bytes') > 1e6);
    assert.ok(value('rcluster_primary_cpu_seconds_total', 'mode="user"') > 0);
    assert.equal(value('rcluster_crash_loops_total'), 0);
    assert.equal(value('rcluster_reloads_total'), 0);
    // No load here: nothing stalled.
    assert.equal(value('rcluster_stalls_total'), 0);
    assert.equal(value('rcluster_stalled_connections_taken_total'), 0);
    p.send('stop');
    await p.fx.result();
  });

  it('a real Prometheus scrapes it and answers a query for rcluster_workers', async () => {
    const prometheus = findTool('prometheus');
    const p = await startPrimary();
    p.send('fork 2');
    await ready(p.metrics);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rcluster-prom-'));
    const config = path.join(dir, 'prometheus.yml');
    fs.writeFileSync(config, [
      'global:',
      '  scrape_interval: 1s',
      '  evaluation_interval: 1s',
      'scrape_configs:',
      '  - job_name: rcluster',
      '    static_configs:',
      `      - targets: ['127.0.0.1:${p.metrics.port}']`,
      '',
    ].join('\n'));
    const web = { address: '127.0.0.1', port: await freePort() };
    const server = spawn(prometheus, [
      `--config.file=${config}`, `--storage.tsdb.path=${path.join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${web.port}`, '--log.level=warn',
    ], { stdio: ['ignore', 'ignore', 'pipe'] });
    tracked.children.add(server);
    let log = '';
    server.stderr.setEncoding('utf8').on('data', (d) => { if (log.length < 20000) log += d; });
    try {
      const query = () => request(web, '/api/v1/query?query=rcluster_workers');
      const answer = await pollUntil(query, (r) => {
        if (r.status !== 200) return false;
        const result = JSON.parse(r.body).data.result;
        return result.length === 1 && result[0].value[1] === '2';
      }, 'Prometheus to report rcluster_workers 2', 60000).catch((err) => {
        err.message += `\nprometheus log:\n${log}`;
        throw err;
      });
      const [series] = JSON.parse(answer.body).data.result;
      assert.equal(series.metric.job, 'rcluster');
      assert.equal(series.metric.instance, `127.0.0.1:${p.metrics.port}`);
      const targets = JSON.parse((await request(web, '/api/v1/targets')).body).data.activeTargets;
      assert.equal(targets[0].health, 'up', targets[0].lastError);
    } finally {
      server.kill('SIGTERM');
      await new Promise((resolve) => {
        if (server.exitCode !== null || server.signalCode !== null) return resolve();
        const t = setTimeout(() => { server.kill('SIGKILL'); resolve(); }, 10000);
        server.once('exit', () => { clearTimeout(t); resolve(); });
      });
      fs.rmSync(dir, { recursive: true, force: true });
    }
    p.send('stop');
    await p.fx.result();
  });

  it('/healthz answers while the primary\'s JavaScript is blocked (a JS endpoint does not)', async () => {
    const p = await startPrimary();
    p.send('fork 1');
    await ready(p.metrics);
    p.send('busy 3000');
    const { busy } = await p.fx.wait((m) => m.busy, 'the busy loop', 10000);
    const jsAnswer = request(p.js, '/healthz', { timeout: 15000 });
    const answers = [];
    while (Date.now() < busy + 2500) answers.push(await request(p.metrics, '/healthz', { timeout: 2000 }));
    const { busyDone } = await p.fx.wait((m) => m.busyDone, 'the end of the busy loop', 10000);
    const js = await jsAnswer;
    assert.ok(answers.length >= 3, `only ${answers.length} answers`);
    for (const a of answers) {
      assert.equal(a.status, 200, JSON.stringify(a));
      assert.ok(a.ms < 1000, `/healthz took ${a.ms} ms`);
      assert.ok(a.at < busyDone, 'answered while the JS thread was blocked');
    }
    // The control: the same probe served by the primary's JS waits for the loop.
    assert.equal(js.status, 200);
    assert.ok(js.at >= busyDone - 50, `the JS endpoint answered ${busyDone - js.at} ms before the loop was free`);
    p.send('stop');
    await p.fx.result();
  });

  it('/readyz: 503 before workers listen, 200 once all do, 503 then 200 across a SIGKILL and restart', async () => {
    const p = await startPrimary({ LISTEN_DELAY_MS: '1500' });
    const noWorkers = await request(p.metrics, '/readyz');
    assert.equal(noWorkers.status, 503);
    assert.equal(noWorkers.body, 'no workers: none started yet, or all stopped\n');
    p.send('fork 2');
    const starting = await pollUntil(() => request(p.metrics, '/readyz'),
      (r) => r.status === 503 && /not listening yet/.test(r.body), '503 while the workers start');
    assert.match(starting.body, /^slot [01]: worker \d+ is not listening yet\n$/);
    await ready(p.metrics);

    const [first] = p.workerPids();
    process.kill(first, 'SIGKILL');
    // The restart waits 1.5 s (initialDelay), then the new worker 1.5 s more to listen.
    await pollUntil(() => request(p.metrics, '/readyz'),
      (r) => r.status === 503 && r.body === 'slot 0 is waiting to restart its worker\n', '503 while slot 0 restarts', 10000);
    await pollUntil(() => request(p.metrics, '/readyz'),
      (r) => r.status === 503 && /^slot 0: worker \d+ is not listening on 1 of its slot's addresses yet\n$/.test(r.body),
      '503 while it starts', 10000);
    await ready(p.metrics);
    assert.equal(p.workerPids().length, 3, 'the slot was restarted');
    const text = (await request(p.metrics, '/metrics')).body;
    assert.match(text, /\nrcluster_slot_restarts_total\{slot="0"\} 1\n/);
    assert.match(text, /\nrcluster_workers 2\n/);
    assert.ok(!text.includes(`pid="${first}"`), 'the killed worker is gone from the series');
    p.send('stop');
    await p.fx.result();
  });

  it('prom-client\'s AggregatorRegistry works unchanged beside it (mirrorToNodeCluster)', async () => {
    const p = await startPrimary({ METRICS_MODE: 'promclient' });
    p.send('fork 2');
    await ready(p.metrics);
    const aggregated = await request(p.js, '/');
    assert.equal(aggregated.status, 200);
    // Both workers answered: 3 + 3, summed by prom-client in the primary.
    assert.match(aggregated.body, /\napp_requests_total 6\n/);
    assert.match((await request(p.metrics, '/metrics')).body, /\nrcluster_workers 2\n/);
    // A reload is counted, and the successors are ready (their addresses replace their predecessors').
    p.send('reload');
    await p.fx.wait((m) => m.reloaded, 'the reload', 30000);
    const text = (await ready(p.metrics), (await request(p.metrics, '/metrics')).body);
    assert.match(text, /\nrcluster_reloads_total 1\n/);
    assert.match((await request(p.js, '/')).body, /\napp_requests_total 6\n/, 'the successors answer prom-client too');
    p.send('stop');
    await p.fx.result();
  });

  it('does not keep the primary alive: it exits once its workers are gone', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rcluster-metrics-exit-'));
    const script = path.join(dir, 'primary.js');
    fs.writeFileSync(script, [
      `const cluster = require(${JSON.stringify(path.join(__dirname, '..'))});`,
      'if (cluster.isPrimary) {',
      '  cluster.setupPrimary({ metrics: { port: 0 } });',
      '  console.log(JSON.stringify(cluster.metricsAddress()));',
      '  cluster.fork();',
      '} else {',
      '  setTimeout(() => process.exit(0), 300);',
      '}',
      '',
    ].join('\n'));
    const child = spawn(process.execPath, [script], { stdio: ['ignore', 'pipe', 'inherit'] });
    tracked.children.add(child);
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d) => { out += d; });
    const exited = await new Promise((resolve) => {
      const t = setTimeout(() => resolve(null), 15000);
      child.once('exit', (code) => { clearTimeout(t); resolve({ code }); });
    });
    fs.rmSync(dir, { recursive: true, force: true });
    assert.deepEqual(exited, { code: 0 }, 'the primary exited by itself');
    const addr = JSON.parse(out.split('\n')[0]);
    assert.equal((await request(addr, '/healthz')).status, 0, 'its endpoint is gone with it');
  });
});

describe('a pending host-name lookup and the process', () => {
  const LOOKUP_FIXTURE = path.join(__dirname, 'fixtures', 'metrics-lookup-primary.js');
  // Runs the fixture; its exit code and stdout, or null if it is still alive after 15 s.
  async function runToExit(mode) {
    const child = spawn(process.execPath, [LOOKUP_FIXTURE, mode], { stdio: ['ignore', 'pipe', 'inherit'] });
    tracked.children.add(child);
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d) => { out += d; });
    return new Promise((resolve) => {
      const t = setTimeout(() => { child.kill('SIGKILL'); resolve(null); }, 15000);
      child.once('exit', (code) => { clearTimeout(t); resolve({ code, address: JSON.parse(out || 'null') }); });
    });
  }

  it('keeps the process alive until the name is bound, as net.Server#listen does, then lets it exit', async () => {
    const r = await runToExit('bound');
    assert.ok(r, 'the primary exited by itself');
    assert.equal(r.code, 0);
    assert.ok(r.address && r.address.port > 0, `bound before exit: ${JSON.stringify(r.address)}`);
  });

  it('holds nothing once stopped: a name then metrics: false exits at once', async () => {
    const r = await runToExit('stopped');
    assert.deepEqual(r, { code: 0, address: null }, 'the primary exited by itself');
  });
});

describe('rcluster --metrics', () => {
  it('serves the endpoint for a CLI cluster and stops with SIGTERM', async () => {
    // runCli's home is this file's own: no other file's CLI app of the same name is in it.
    const run = runCli(['-i', '2', '--metrics', '127.0.0.1:0', APP],
      { env: { PORT: String(await freePort()) } });
    const [line] = await run.until(/metrics on http:\/\/127\.0\.0\.1:\d+\/metrics/, 1, 'stderr', 15000);
    const addr = { address: '127.0.0.1', port: Number(/127\.0\.0\.1:(\d+)\/metrics/.exec(line)[1]) };
    await ready(addr);
    const pids = samples((await request(addr, '/metrics')).body)
      .filter(([n]) => n === 'rcluster_worker_up').map(([, l]) => Number(/pid="(\d+)"/.exec(l)[1]));
    assert.equal(pids.length, 2);
    await stopCli(run);
    for (const pid of pids) assert.ok(isGone(pid), `worker ${pid} is gone`);
  });

  it('a --metrics port in use is one line, exit 1 (not a bad command line), and no worker starts', async () => {
    const taken = net.createServer();
    await new Promise((resolve) => taken.listen(0, '127.0.0.1', resolve));
    try {
      const r = await runToExit(['--metrics', `127.0.0.1:${taken.address().port}`, APP], { timeout: 10000 });
      assert.equal(r.code, 1, r.stderr);
      const lines = r.stderr.split('\n').filter(Boolean);
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0], /^rcluster: .*EADDRINUSE/);
    } finally {
      taken.close();
    }
  });

  it('a --metrics host name is resolved first: a bad one is one line, exit 1; localhost is served', async () => {
    const bad = await runToExit(['--metrics', 'no-such-host.invalid:9100', APP], { timeout: 10000 });
    assert.equal(bad.code, 1, bad.stderr);
    assert.deepEqual(bad.stderr.split('\n').filter(Boolean), ['rcluster: getaddrinfo ENOTFOUND no-such-host.invalid']);
    const run = runCli(['-i', '1', '--metrics', 'localhost:0', APP],
      { env: { PORT: String(await freePort()) } });
    // The address node:net would pick for 'localhost'.
    const { address, family } = await require('node:dns').promises.lookup('localhost');
    const shown = family === 6 ? `\\[${address}\\]` : address.replace(/\./g, '\\.');
    const [line] = await run.until(new RegExp(`metrics on http://${shown}:\\d+/metrics`), 1, 'stderr', 15000);
    const port = Number(/:(\d+)\/metrics/.exec(line)[1]);
    await ready({ address, port });
    await stopCli(run);
  });

  it('rejects a bad --metrics value with exit code 2', () => {
    for (const v of ['x', '70000', 'host:', '[::1]']) {
      const r = spawnSync(process.execPath, [CLI, '--metrics', v, APP], { encoding: 'utf8', timeout: 10000 });
      assert.equal(r.status, 2, v);
      assert.match(r.stderr, /^rcluster: --metrics: .* is not \[host:\]port/, v);
    }
  });
});
