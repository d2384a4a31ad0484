'use strict';
// Supervision (issue #4): crash restarts in the same slot, crash loops, rolling
// reload, shutdown, scale, stats, hang detection, recycling, option checks and
// signal handling, all through the public API.
//
// Every scenario changes the primary's global settings, so each runs in a
// primary of its own (fixtures/sup-*.js, workers in fixtures/sup-worker.js)
// that reports through fixtures/harness.js; the assertions are made here.
// Fixtures SIGKILL their workers on any failure or deadline, and this file
// SIGKILLs every fixture it started after each test (workers die with their primary: rcluster's
// reaper kills those still alive). Only loopback is used; nothing asserts speed.

const { describe, it, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { startFixture, killFixtures } = require('./helpers');

const FIXTURES = path.join(__dirname, 'fixtures');
// Generous: the machine may be busy with a benchmark.
const TEST_TIMEOUT = 40000;

function baseEnv(extra) {
  const env = { ...process.env, ...extra };
  for (const k of ['NODE_UNIQUE_ID', 'NODE_TEST_CONTEXT', 'NODE_CHANNEL_FD', 'NODE_CHANNEL_SERIALIZATION_MODE']) {
    delete env[k];
  }
  if (!extra || !('NODE_CLUSTER_SCHED_POLICY' in extra)) delete env.NODE_CLUSTER_SCHED_POLICY;
  return env;
}

function start(name, env) {
  return startFixture(path.join(FIXTURES, name), { env: baseEnv(env) });
}

afterEach(killFixtures);

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return e.code === 'EPERM';
  }
}

// Indexes of the entries matching each predicate, in order; fails if one is
// missing.
function positions(events, preds) {
  return preds.map(([label, pred]) => {
    const i = events.findIndex(pred);
    assert.notEqual(i, -1, `no ${label} in ${JSON.stringify(events)}`);
    return i;
  });
}

const isInt = (v) => Number.isInteger(v);
const isNum = (v) => typeof v === 'number' && Number.isFinite(v);

describe('supervision', () => {
  for (const policy of ['reuseport', 'rr', 'none']) {
    it(`${policy}: a crashed worker is replaced in its slot (exit → restarting → fork → online → listening) and serves the same port`, { timeout: TEST_TIMEOUT }, async () => {
      const fx = start('sup-restart.js', { NODE_CLUSTER_SCHED_POLICY: policy });
      const r = await fx.result();
      assert.equal(r.before.body, String(r.w1.id));
      assert.notEqual(r.w2.id, r.w1.id, 'the replacement is a new worker');
      assert.equal(r.w2.slot, r.w1.slot, 'same slot');
      assert.equal(r.w1.exitedAfterDisconnect, false);
      assert.equal(r.w2.port, r.w1.port, 'listens on the same port');
      assert.equal(r.w2.state, 'listening');
      assert.deepEqual(r.after, { ok: true, body: String(r.w2.id) });
      // Made while the slot was empty: waited in the slot's socket.
      assert.deepEqual(r.during, { ok: true, body: String(r.w2.id) }, 'a request made during the restart delay is answered');

      const ev = r.events;
      const [exit, restarting, fork, online, listening] = positions(ev, [
        ["w1's exit", (e) => e.ev === 'exit' && e.id === r.w1.id],
        ["w1's restarting", (e) => e.ev === 'restarting' && e.id === r.w1.id],
        ["w2's fork", (e) => e.ev === 'fork' && e.id === r.w2.id],
        ["w2's online", (e) => e.ev === 'online' && e.id === r.w2.id],
        ["w2's listening", (e) => e.ev === 'listening' && e.id === r.w2.id],
      ]);
      assert.ok(exit < restarting && restarting < fork && fork < online && online < listening,
        `order exit → restarting → fork → online → listening: ${JSON.stringify(ev)}`);
      assert.deepEqual(ev[exit], { ev: 'exit', id: r.w1.id, slot: 0, t: ev[exit].t, code: 1, signal: null, ead: false });
      const [delay] = ev[restarting].args;
      assert.ok(Math.abs(delay - 300) < 1, `restarting reports the delay (initialDelay 300): ${delay}`);
      assert.ok(ev[fork].t - ev[exit].t >= 250, `the replacement waited for the delay: ${ev[fork].t - ev[exit].t} ms`);
      assert.equal(ev.filter((e) => e.ev === 'fork').length, 2, 'exactly one replacement');
      assert.equal(ev.filter((e) => e.ev === 'restarting').length, 1);
      assert.equal((await fx.waitExit()).code, 0);
    });
  }

  for (const [how, env] of [['', {}], [' (restarts made while the primary JS is blocked)', { SUP_BLOCK_MS: '800' }]]) {
    it(`a crash loop emits crashloop, stops restarting that slot, and the primary then exits on its own${how}`, { timeout: TEST_TIMEOUT }, async () => {
      const fx = start('sup-crashloop.js', env);
      const r = await fx.result();
      assert.deepEqual(r.info, { slot: 0, crashes: 3 });
      assert.equal(r.worker.slot, 0);
      assert.equal(r.worker.dead, true, "crashloop's worker is the last dead one");
      const ev = r.events;
      assert.deepEqual(ev.map((e) => e.ev),
        ['fork', 'exit', 'restarting', 'fork', 'exit', 'restarting', 'fork', 'exit', 'crashloop'],
        JSON.stringify(ev));
      assert.ok(ev.filter((e) => e.ev === 'exit').every((e) => e.code === 7 && e.slot === 0));
      assert.equal(ev[8].id, ev[7].id, 'crashloop is about the worker that just exited');
      // No timers or workers left: the primary must exit by itself.
      const exit = await fx.waitExit(15000);
      assert.deepEqual(exit, { code: 0, signal: null });
      const final = fx.messages.find((m) => m.final);
      assert.deepEqual(final.final, { code: 0, forks: 3, live: 0, events: 9 }, 'nothing was restarted after the crash loop');
    });
  }

  it('restarts that cannot be spawned count as crashes (backoff, then crashloop); the primary carries on', { timeout: TEST_TIMEOUT }, async () => {
    // The worker's cwd is removed, then it crashes: every restart fails with ENOENT.
    const heard = start('sup-spawn-fail.js', { SUP_ERROR_LISTENER: '1' });
    const unheard = start('sup-spawn-fail.js');
    const [r, u] = await Promise.all([heard.result(), unheard.result()]);
    assert.deepEqual(r.info, { slot: 0, crashes: 3 });
    assert.equal(r.crashloopWorker, 1, "crashloop's worker is the slot's last (dead) worker");
    const names = (events) => events.map((e) => e.ev);
    assert.deepEqual(names(r.events), ['fork', 'exit', 'restarting', 'restarting', 'crashloop', 'fork'],
      JSON.stringify(r.events));
    assert.deepEqual(r.events.filter((e) => e.ev === 'restarting').map((e) => e.args[0]), [20, 40], 'backoff grows');
    const failure = { code: 'ERR_RCLUSTER_RESTART', slot: 0, cause: 'ENOENT' };
    assert.deepEqual(r.errors, [1, 2].map(() => ({ ...failure, syscall: `spawn ${process.execPath}` })));
    assert.deepEqual(r.warnings, []);
    // Nobody listens for 'error' on cluster: process warnings, no crash.
    assert.deepEqual(names(u.events), names(r.events));
    assert.deepEqual(u.warnings, [failure, failure]);
    // After the crash loop the slot is free again; scale(1)'s new worker cannot
    // be spawned either, and scale() rejects with that error.
    assert.equal(r.scaled, 'ENOENT');
    assert.deepEqual(r.workers, []);
    for (const fx of [heard, unheard]) assert.deepEqual(await fx.waitExit(), { code: 0, signal: null });
  });

  it("restart is off by default: forking in the program's own 'exit' handler gives one replacement, as with node:cluster", { timeout: TEST_TIMEOUT }, async () => {
    const ours = start('sup-norestart.js');
    const node = start('sup-norestart.js', { SUP_IMPL: 'node' });
    const [r, n] = await Promise.all([ours.result(), node.result()]);
    assert.deepEqual(n, { forks: 2, live: [2], restarting: 0, replacement: 2, w1Dead: true }, 'node:cluster baseline');
    assert.deepEqual(r, n);
    assert.equal((await ours.waitExit()).code, 0);
  });

  it("a restarted worker gets its slot's extra stdio: its own pipe at fd 4, as worker.process.stdio[4]", { timeout: TEST_TIMEOUT }, async () => {
    const fx = start('sup-respawn-spec.js', { SUP_CASE: 'stdio' });
    const r = await fx.result();
    assert.deepEqual(r.w1, { slot: 0, first: { wrote: true, error: null }, hasPipe: true, line: 'fd4 from 1\n' });
    assert.deepEqual(r.w2, { slot: 0, replaced: true, first: { wrote: true, error: null }, hasPipe: true, line: 'fd4 from 2\n' });
    assert.equal((await fx.waitExit()).code, 0);
  });

  it("a restarted worker keeps its slot's serialization, not the primary's later setting", { timeout: TEST_TIMEOUT }, async () => {
    const fx = start('sup-respawn-spec.js', { SUP_CASE: 'serialization' });
    const r = await fx.result();
    const fine = { first: { ready: true }, echo: { isMap: true, entries: [['a', 1]] } };
    assert.deepEqual(r.w1, { slot: 0, ...fine });
    assert.deepEqual(r.w2, { slot: 0, replaced: true, ...fine });
    assert.equal((await fx.waitExit()).code, 0);
  });

  it('workers that leave on purpose (worker.disconnect(), cluster.worker.disconnect()) are not restarted', { timeout: TEST_TIMEOUT }, async () => {
    const fx = start('sup-graceful.js');
    const r = await fx.result();
    assert.deepEqual(r.ead, [true, true]);
    assert.equal(r.live, 0);
    assert.deepEqual(r.events.map((e) => e.ev).sort(), ['exit', 'exit', 'fork', 'fork'], JSON.stringify(r.events));
    assert.ok(r.events.filter((e) => e.ev === 'exit').every((e) => e.code === 0 && e.ead === true));
    assert.deepEqual(await fx.waitExit(), { code: 0, signal: null }, 'nothing left: the primary exits on its own');
  });

  it('reload() under light load: no failed request, new worker ids, same slots and port', { timeout: TEST_TIMEOUT }, async () => {
    const fx = start('sup-reload.js');
    const r = await fx.result();
    assert.equal(r.failureCount, 0, `failed requests: ${JSON.stringify(r.failures)}`);
    assert.ok(r.sentDuring > 0, 'requests were made during the reload');
    assert.ok(r.old.every((w) => w.dead && w.ead === true), JSON.stringify(r.old));
    const oldIds = r.old.map((w) => w.id);
    assert.equal(r.fresh.length, 2);
    assert.ok(r.fresh.every((w) => !oldIds.includes(w.id)), 'every worker was replaced');
    assert.deepEqual(r.fresh.map((w) => w.slot).sort(), r.old.map((w) => w.slot).sort(), 'slots stay');
    assert.ok(r.fresh.every((w) => w.state === 'listening'));
    assert.deepEqual(r.freshPorts, [r.port, r.port]);
    for (const w of r.fresh) assert.ok(r.bodies[w.id] > 0, `new worker ${w.id} served requests: ${JSON.stringify(r.bodies)}`);
    // Each successor listened before its predecessor left.
    for (const old of r.old) {
      const successor = r.fresh.find((w) => w.slot === old.slot);
      const [listened, left] = positions(r.events, [
        ['successor listening', (e) => e.ev === 'listening' && e.id === successor.id],
        ['old exit', (e) => e.ev === 'exit' && e.id === old.id],
      ]);
      assert.ok(listened < left, JSON.stringify(r.events));
    }
    assert.equal(r.events.filter((e) => e.ev === 'restarting').length, 0, 'a reload is not a crash');
  });

  it('reload() rejects with ERR_RCLUSTER_NOT_READY when a successor crashes or is not ready in time; old workers keep serving', { timeout: TEST_TIMEOUT }, async () => {
    const fx = start('sup-reload-fail.js');
    const r = await fx.result();
    assert.equal(r.crash.resolved, false);
    assert.equal(r.crash.code, 'ERR_RCLUSTER_NOT_READY', r.crash.message);
    assert.equal(r.silent.resolved, false);
    assert.equal(r.silent.code, 'ERR_RCLUSTER_NOT_READY', r.silent.message);
    assert.deepEqual(r.oldAlive, [true, true]);
    for (const after of [r.afterCrash, r.afterSilent]) {
      assert.deepEqual(after.live.sort(), [...r.oldIds].sort(), 'only the old workers are left');
      assert.ok(after.bodies.every((b) => b.ok && r.oldIds.includes(Number(b.body))), JSON.stringify(after.bodies));
    }
    const forks = r.events.filter((e) => e.ev === 'fork').map((e) => e.id);
    const [crashed, silent] = forks.slice(2, 4);
    assert.ok(r.events.some((e) => e.ev === 'exit' && e.id === crashed && e.code === 7));
    assert.ok(r.events.some((e) => e.ev === 'exit' && e.id === silent && e.signal === 'SIGKILL'), 'the late successor is killed');
    assert.equal(r.events.filter((e) => e.ev === 'restarting').length, 1,
      `only the deliberate crash of an old worker is restarted: ${JSON.stringify(r.events)}`);
    assert.equal(r.replacement.slot, 0, 'slots are still supervised after a failed reload');
    assert.deepEqual(r.errors, []);
  });

  it('scale(n) grows into free slots and shrinks gracefully without restarts', { timeout: TEST_TIMEOUT }, async () => {
    const fx = start('sup-scale.js');
    const r = await fx.result();
    assert.equal(r.up.isPromise, true);
    assert.equal(r.up.value, 3);
    assert.deepEqual(r.up.workers.map((w) => [w.slot, w.state]), [[0, 'listening'], [1, 'listening'], [2, 'listening']]);
    assert.ok(r.bodiesUp.every((b) => b.ok), JSON.stringify(r.bodiesUp));
    const upIds = r.up.workers.map((w) => w.id);
    assert.equal(r.down.value, 1);
    assert.deepEqual(r.down.workers, [{ id: r.first.id, slot: 0, state: 'listening', connected: true }], 'the lowest slot stays');
    assert.deepEqual(r.afterDown, r.down.workers, 'retired slots are not restarted');
    assert.ok(r.bodiesDown.every((b) => b.ok && b.body === String(r.first.id)), JSON.stringify(r.bodiesDown));
    for (const id of upIds.slice(1)) {
      assert.ok(r.events.some((e) => e.ev === 'exit' && e.id === id && e.code === 0 && e.ead === true), `${id} left gracefully`);
    }
    assert.equal(r.upAgain.value, 2);
    assert.deepEqual(r.upAgain.workers.map((w) => w.slot), [0, 1], 'the freed slot is reused');
    assert.ok(!upIds.includes(r.upAgain.workers[1].id));
    assert.equal(r.events.filter((e) => e.ev === 'restarting').length, 0);
    assert.ok(r.events.filter((e) => e.ev === 'listening').every((e) => e.port === r.port));
  });

  it('scale(n) down also removes a slot whose restart is pending', { timeout: TEST_TIMEOUT }, async () => {
    const fx = start('sup-scale-pending.js');
    const r = await fx.result();
    assert.equal(r.value, 1);
    assert.deepEqual(r.liveAtResolve, [0]);
    assert.deepEqual(r.liveLater.map((w) => w.slot), [0],
      `scale(1) resolved 1 but the cluster later has ${r.liveLater.length} workers: ${JSON.stringify(r.events)}`);
  });

  it('shutdown({timeout}) resolves, SIGKILLs a worker that does not leave after the timeout, and restarts nothing', { timeout: TEST_TIMEOUT }, async () => {
    const fx = start('sup-shutdown.js');
    const r = await fx.result();
    assert.equal(r.isPromise, true);
    assert.deepEqual(r.polite, { id: r.polite.id, dead: true, code: 0, signal: null, ead: true });
    assert.deepEqual(r.straggler, { id: r.straggler.id, dead: true, code: null, signal: 'SIGKILL', ead: true });
    assert.ok(r.ms >= r.timeout - 50, `the straggler got its ${r.timeout} ms (${r.ms} ms)`);
    assert.equal(r.live, 0);
    assert.equal(r.workers, 0);
    assert.equal(r.events.filter((e) => e.ev === 'fork').length, 2);
    assert.equal(r.events.filter((e) => e.ev === 'restarting').length, 0);
    assert.deepEqual(await fx.waitExit(), { code: 0, signal: null }, 'the primary exits on its own afterwards');
  });

  it('stats() reports workers, totals and the primary with the documented fields and types', { timeout: TEST_TIMEOUT }, async () => {
    const fx = start('sup-stats.js', { NODE_CLUSTER_SCHED_POLICY: 'rr' });
    const r = await fx.result();
    const { stats } = r;
    assert.deepEqual(Object.keys(stats).sort(), ['primary', 'totals', 'workers']);
    assert.ok(Array.isArray(stats.workers));
    assert.equal(stats.workers.length, 2);
    const bySlot = [...stats.workers].sort((a, b) => a.slot - b.slot);
    for (const [i, w] of bySlot.entries()) {
      assert.deepEqual(Object.keys(w).sort(), ['cpu', 'handoffs', 'id', 'pid', 'restarts', 'rss', 'slot', 'state', 'uptime'].sort());
      const live = r.live.find((l) => l.id === w.id);
      assert.ok(live, `stats lists live worker ${w.id}`);
      assert.ok(isInt(w.id));
      assert.equal(w.pid, live.pid);
      assert.equal(w.slot, i);
      assert.equal(w.state, 'listening');
      assert.ok(isNum(w.uptime) && w.uptime >= 0, `uptime ${w.uptime}`);
      assert.ok(isInt(w.restarts));
      assert.ok(isNum(w.rss) && w.rss > 0, `rss ${w.rss}`);
      assert.deepEqual(Object.keys(w.cpu).sort(), ['system', 'user']);
      assert.ok(isNum(w.cpu.user) && w.cpu.user >= 0);
      assert.ok(isNum(w.cpu.system) && w.cpu.system >= 0);
      assert.ok(isInt(w.handoffs) && w.handoffs >= 0);
    }
    assert.deepEqual(bySlot.map((w) => w.restarts), [0, 1], 'slot 1 was restarted once');
    const t = stats.totals;
    assert.deepEqual(Object.keys(t).sort(),
      ['cpuSystem', 'cpuUser', 'handoffs', 'restarts', 'rss', 'stalledTaken', 'stalls', 'workers']);
    assert.equal(t.workers, 2);
    // rr: no reuseport group, so nothing is watched for stalls.
    assert.equal(t.stalls, 0);
    assert.equal(t.stalledTaken, 0);
    assert.equal(t.restarts, 1);
    assert.equal(t.rss, bySlot[0].rss + bySlot[1].rss);
    assert.ok(Math.abs(t.cpuUser - (bySlot[0].cpu.user + bySlot[1].cpu.user)) < 1e-9);
    assert.ok(Math.abs(t.cpuSystem - (bySlot[0].cpu.system + bySlot[1].cpu.system)) < 1e-9);
    assert.equal(t.handoffs, bySlot[0].handoffs + bySlot[1].handoffs);
    // rr: the primary handed each of the 6 answered connections over.
    assert.ok(r.bodies.every((b) => b.ok), JSON.stringify(r.bodies));
    assert.ok(t.handoffs >= r.bodies.length, `handoffs ${t.handoffs}`);
    const p = stats.primary;
    assert.deepEqual(Object.keys(p).sort(), ['cpu', 'pid', 'rss']);
    assert.equal(p.pid, r.primaryPid);
    assert.ok(isNum(p.rss) && p.rss > 0);
    assert.ok(isNum(p.cpu.user) && p.cpu.user >= 0 && isNum(p.cpu.system) && p.cpu.system >= 0);
  });

  it('hangTimeout: a worker whose event loop is blocked is reported unresponsive, SIGKILLed and replaced in its slot', { timeout: TEST_TIMEOUT }, async () => {
    const fx = start('sup-hang.js');
    const r = await fx.result();
    assert.equal(r.blocked.dead, true);
    assert.equal(r.blocked.signal, 'SIGKILL');
    assert.equal(r.healthy.dead, false, 'the healthy worker is left alone');
    assert.equal(r.replacement.slot, r.blocked.slot);
    assert.notEqual(r.replacement.id, r.blocked.id);
    assert.ok(isNum(r.silentMs) && r.silentMs >= r.hangTimeout, `silentMs ${r.silentMs}`);
    const unresponsive = r.events.filter((e) => e.ev === 'unresponsive');
    assert.deepEqual(unresponsive.map((e) => e.id), [r.blocked.id], 'only the blocked worker');
    const [flagged, exited, forked, listening] = positions(r.events, [
      ['unresponsive', (e) => e.ev === 'unresponsive'],
      ["the blocked worker's exit", (e) => e.ev === 'exit' && e.id === r.blocked.id],
      ["the replacement's fork", (e) => e.ev === 'fork' && e.id === r.replacement.id],
      ["the replacement's listening", (e) => e.ev === 'listening' && e.id === r.replacement.id],
    ]);
    assert.ok(flagged < exited && exited < forked && forked < listening, JSON.stringify(r.events));
    const live = [r.healthy.id, r.replacement.id].map(String);
    assert.ok(r.bodies.every((b) => b.ok && live.includes(b.body)), JSON.stringify(r.bodies));
  });

  it('hangTimeout: a replacement forked after the watchdog stopped (nothing left to watch) is watched again', { timeout: TEST_TIMEOUT }, async () => {
    const fx = start('sup-hang-alone.js');
    const r = await fx.result();
    assert.equal(r.flagged, r.second, 'the blocked replacement was reported unresponsive');
    assert.ok(r.events.some((e) => e.ev === 'restarting'), JSON.stringify(r.events));
  });

  for (const mode of ['age', 'memory']) {
    it(`${mode === 'age' ? 'maxAge' : 'maxMemory'}: the worker is recycled — 'recycle', a successor in its slot listens, then the old one leaves gracefully`, { timeout: TEST_TIMEOUT }, async () => {
      const fx = start('sup-recycle.js', { SUP_RECYCLE: mode });
      const r = await fx.result();
      assert.deepEqual(r.recycled, { id: r.w1.id, reason: mode });
      if (mode === 'age') assert.ok(r.recycleMs >= r.maxAge, `recycled ${r.recycleMs} ms after the fork`);
      assert.equal(r.w2.slot, r.w1.slot);
      assert.deepEqual([r.w1.code, r.w1.signal, r.w1.ead], [0, null, true], 'the old worker left gracefully');
      const [recycle, fork, listening, exit] = positions(r.events, [
        ['recycle', (e) => e.ev === 'recycle' && e.id === r.w1.id],
        ["the successor's fork", (e) => e.ev === 'fork' && e.id === r.w2.id],
        ["the successor's listening", (e) => e.ev === 'listening' && e.id === r.w2.id],
        ["the old worker's exit", (e) => e.ev === 'exit' && e.id === r.w1.id],
      ]);
      assert.ok(recycle < fork && fork < listening && listening < exit, JSON.stringify(r.events));
      assert.equal(r.events.find((e) => e.ev === 'listening' && e.id === r.w2.id).port, r.port);
      assert.ok(r.bodies.every((b) => b.ok && b.body === String(r.w2.id)), JSON.stringify(r.bodies));
      assert.equal(r.events.filter((e) => e.ev === 'restarting').length, 0);
      assert.deepEqual(r.errors, []);
    });
  }

  it('bad options are refused with clear errors, and leave the settings unchanged', { timeout: TEST_TIMEOUT }, async () => {
    const fx = start('sup-errors.js');
    const r = await fx.result();
    const expected = {
      'restart: yes': ['ERR_INVALID_ARG_TYPE', 'options.restart'],
      'restart: 1': ['ERR_INVALID_ARG_TYPE', 'options.restart'],
      'restart: []': ['ERR_INVALID_ARG_TYPE', 'options.restart'],
      'restart.maxRestarts: -1': ['ERR_OUT_OF_RANGE', 'options.restart.maxRestarts'],
      'restart.maxRestarts: 1.5': ['ERR_OUT_OF_RANGE', 'options.restart.maxRestarts'],
      'restart.maxRestarts: "3"': ['ERR_INVALID_ARG_TYPE', 'options.restart.maxRestarts'],
      'restart.bogus: 1': ['ERR_INVALID_ARG_VALUE', 'options.restart.bogus'],
      'restart.initialDelay: -1': ['ERR_OUT_OF_RANGE', 'options.restart.initialDelay'],
      'restart.maxDelay: "1s"': ['ERR_INVALID_ARG_TYPE', 'options.restart.maxDelay'],
      'restart.factor: 0.5': ['ERR_OUT_OF_RANGE', 'options.restart.factor'],
      'restart.window: 0': ['ERR_OUT_OF_RANGE', 'options.restart.window'],
      'hangTimeout: -5': ['ERR_OUT_OF_RANGE', 'options.hangTimeout'],
      'hangTimeout: "1s"': ['ERR_INVALID_ARG_TYPE', 'options.hangTimeout'],
      'hangTimeout: NaN': ['ERR_OUT_OF_RANGE', 'options.hangTimeout'],
      'maxMemory: lots': ['ERR_INVALID_ARG_VALUE', 'options.maxMemory'],
      'maxMemory: -1': ['ERR_OUT_OF_RANGE', 'options.maxMemory'],
      'maxMemory: true': ['ERR_INVALID_ARG_TYPE', 'options.maxMemory'],
      'maxAge: -1': ['ERR_OUT_OF_RANGE', 'options.maxAge'],
      'maxAge: "1h"': ['ERR_INVALID_ARG_TYPE', 'options.maxAge'],
      'signals: yes': ['ERR_INVALID_ARG_TYPE', 'options.signals'],
      'valid restart + bad hangTimeout': ['ERR_OUT_OF_RANGE', 'options.hangTimeout'],
      'scale(-1)': ['ERR_OUT_OF_RANGE', '"n"'],
      "scale('2')": ['ERR_INVALID_ARG_TYPE', '"n"'],
      'scale(1.5)': ['ERR_OUT_OF_RANGE', '"n"'],
      'scale(1, {readyTimeout: -1})': ['ERR_OUT_OF_RANGE', 'readyTimeout'],
      'reload(5)': ['ERR_INVALID_ARG_TYPE', 'options'],
      'reload({readyTimeout: -1})': ['ERR_OUT_OF_RANGE', 'readyTimeout'],
      "reload({killTimeout: 'x'})": ['ERR_INVALID_ARG_TYPE', 'killTimeout'],
      "shutdown('x')": ['ERR_INVALID_ARG_TYPE', 'options'],
      'shutdown({timeout: -1})': ['ERR_OUT_OF_RANGE', 'timeout'],
      'shutdown({timeout: 3e9})': ['ERR_OUT_OF_RANGE', '<= 2147483647'],
      'reload({killTimeout: 2 ** 31})': ['ERR_OUT_OF_RANGE', 'killTimeout'],
    };
    const classes = { ERR_INVALID_ARG_TYPE: 'TypeError', ERR_INVALID_ARG_VALUE: 'TypeError', ERR_OUT_OF_RANGE: 'RangeError' };
    assert.deepEqual(Object.keys(r.bad).sort(), Object.keys(expected).sort());
    for (const [name, [code, mentions]] of Object.entries(expected)) {
      const got = r.bad[name];
      assert.ok(got.threw, `${name} was accepted`);
      assert.equal(got.code, code, `${name}: ${JSON.stringify(got)}`);
      assert.equal(got.name, classes[code], `${name}: ${JSON.stringify(got)}`);
      assert.ok(got.message.includes(mentions), `${name}: the message names ${mentions}: ${got.message}`);
      assert.equal(got.settingsUnchanged, true, `${name} changed cluster.settings`);
    }
    for (const [name, got] of Object.entries(r.good)) assert.equal(got.threw, false, `${name}: ${JSON.stringify(got)}`);
    assert.equal(r.workers, 0);
  });

  it('huge but finite durations and counts are refused or honoured, never abort the primary', { timeout: TEST_TIMEOUT }, async () => {
    const cases = [
      { maxAge: 1e300 },
      { hangTimeout: 1e300 },
      { restart: { initialDelay: 10, maxDelay: 1e300 } },
      { restart: { initialDelay: 10, maxRestarts: 2 ** 32 } },
    ];
    const fixtures = cases.map((options) => start('sup-huge.js', { SUP_OPTIONS: JSON.stringify(options) }));
    const problems = [];
    for (const [i, fx] of fixtures.entries()) {
      const label = JSON.stringify(cases[i]);
      const exit = await fx.waitExit(20000);
      const msg = fx.messages.find((m) => m.result || m.error);
      if (exit.code !== 0 || !msg || !msg.result) {
        const why = (fx.stderr.match(/panicked at[^\n]*\n[^\n]*/) || [fx.stderr.slice(0, 300)])[0];
        problems.push(`${label}: primary died (${JSON.stringify(exit)}): ${why}`);
        continue;
      }
      const res = msg.result;
      if (res.setup === 'threw') {
        if (res.code !== 'ERR_OUT_OF_RANGE') problems.push(`${label}: refused with ${res.code}: ${res.message}`);
      } else if (res.fork !== 'ok') {
        problems.push(`${label}: fork threw ${res.code}: ${res.message}`);
      } else if (res.afterExit === 'crashloop') {
        problems.push(`${label}: the first crash was treated as a crash loop`);
      }
    }
    assert.deepEqual(problems, []);
  });

  it('signals: true — SIGHUP reloads (new ids, same slots), SIGTERM shuts down and exits 0 with every worker gone', { timeout: TEST_TIMEOUT }, async () => {
    const fx = start('sup-signals.js');
    const { ready } = await fx.wait((m) => m.ready || m.error, 'ready');
    assert.ok(ready, JSON.stringify(fx.messages));
    fx.child.kill('SIGHUP');
    const { reloaded } = await fx.wait((m) => m.reloaded || m.error, 'the reload');
    assert.ok(reloaded, JSON.stringify(fx.messages));
    assert.equal(reloaded.ids.length, 2);
    assert.ok(reloaded.ids.every((id) => !ready.ids.includes(id)), `new ids ${reloaded.ids} vs ${ready.ids}`);
    assert.deepEqual(reloaded.slots, [...ready.slots].sort());
    assert.ok(reloaded.oldExits.every((e) => e.code === 0 && e.ead === true), JSON.stringify(reloaded.oldExits));
    assert.deepEqual(reloaded.errors, []);
    fx.child.kill('SIGTERM');
    const exit = await fx.waitExit(20000);
    assert.deepEqual(exit, { code: 0, signal: null }, fx.describe());
    const final = fx.messages.find((m) => m.final);
    assert.equal(final.final.live, 0);
    assert.deepEqual(final.final.errors, []);
    const pids = fx.messages.filter((m) => m.workerPid).map((m) => m.workerPid);
    assert.equal(pids.length, 4);
    assert.deepEqual(pids.filter(alive), [], 'every worker is gone');
  });
});
