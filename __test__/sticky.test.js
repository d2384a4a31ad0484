'use strict';
// sticky: 'ip' (issue 11): every connection from one client address reaches
// the same worker slot, under SCHED_REUSEPORT (the kernel's steering program)
// and SCHED_RR (the core's dispatcher); a dead slot's clients move together
// to its replacement while the other slot's stay; socket.io long-polling
// works on 2 workers without @socket.io/sticky. Each case runs in its own
// primary (fixtures/sticky-primary.js, fixtures/sticky-socketio.js).
const { describe, test } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { fixtureResult, runOnce } = require('./helpers');

const fixture = (name) => path.join(__dirname, 'fixtures', name);
const TEST_TIMEOUT = 60000;

function only(ids) {
  const set = new Set(ids);
  return set.size === 1 ? ids[0] : [...set];
}

for (const policy of ['reuseport', 'rr']) {
  describe(`sticky: 'ip' under ${policy}`, () => {
    const run = runOnce(() => fixtureResult(fixture('sticky-primary.js'),
      { env: { ...process.env, NODE_CLUSTER_SCHED_POLICY: policy } }, `sticky ${policy}`, 45000));

    test('each address (16 IPv4 sources and ::1) always reaches one worker, and they spread over both',
      { timeout: TEST_TIMEOUT }, async () => {
        const r = await run();
        assert.equal(r.policy, policy === 'rr' ? 2 : 3);
        const owner = {};
        for (const [addr, ids] of Object.entries(r.phases.before)) {
          owner[addr] = only(ids);
          assert.equal(typeof owner[addr], 'number', `${addr} reached ${JSON.stringify(ids)}`);
        }
        assert.equal(new Set(Object.values(owner)).size, 2, `both workers serve: ${JSON.stringify(owner)}`);
      });

    test("after SIGKILL the other slot's addresses keep their worker; the dead slot's move to its replacement",
      { timeout: TEST_TIMEOUT }, async () => {
        const r = await run();
        const { before, gap, after } = r.phases;
        assert.ok(r.gapBeforeReplacement, 'the gap requests ran while the slot was empty');
        assert.equal(r.slots[r.replacement], r.slots[r.killed], 'replaced in the same slot');
        const survivor = Number(Object.keys(r.slots).find((id) => Number(id) !== r.killed && Number(id) !== r.replacement));
        const moved = [];
        for (const addr of Object.keys(before)) {
          const was = only(before[addr]);
          if (was === r.killed) {
            moved.push(addr);
            assert.equal(only(gap[addr]), survivor, `${addr} goes to the live slot meanwhile: ${gap[addr]}`);
            assert.equal(only(after[addr]), r.replacement, `${addr} goes to the replacement: ${after[addr]}`);
          } else {
            assert.equal(was, survivor);
            assert.equal(only(gap[addr]), survivor, `${addr} keeps its worker during the gap: ${gap[addr]}`);
            assert.equal(only(after[addr]), survivor, `${addr} keeps its worker after: ${after[addr]}`);
          }
        }
        assert.ok(moved.length > 0 && moved.length < Object.keys(before).length, `moved: ${moved}`);
      });
  });
}

test('both policies send each address to the same slot', { timeout: TEST_TIMEOUT }, async () => {
  const slotsOf = async (policy) => {
    const r = await fixtureResult(fixture('sticky-primary.js'),
      { env: { ...process.env, NODE_CLUSTER_SCHED_POLICY: policy } }, `sticky ${policy}`, 45000);
    const bySource = Object.entries(r.phases.before).map(([a, ids]) => {
      // Every answer from one worker, a worker of slot 0 or 1.
      assert.equal(new Set(ids).size, 1, `${policy}: ${a} got ${JSON.stringify(ids)}`);
      assert.ok([0, 1].includes(r.slots[ids[0]]), `${policy}: ${a} answered by ${ids[0]}`);
      return [a, r.slots[ids[0]]];
    });
    assert.equal(bySource.length, 17, `${policy}: 16 IPv4 sources and ::1`);
    assert.equal(new Set(bySource.map(([, slot]) => slot)).size, 2, `${policy}: both slots get clients`);
    return Object.fromEntries(bySource);
  };
  assert.deepEqual(await slotsOf('reuseport'), await slotsOf('rr'));
});

test("bad sticky values: Node's error codes; SCHED_NONE is refused at setupPrimary; the primary carries on",
  { timeout: TEST_TIMEOUT }, async () => {
    const r = await fixtureResult(fixture('sticky-primary.js'),
      { args: ['errors'], env: { ...process.env, NODE_CLUSTER_SCHED_POLICY: 'none' } }, 'sticky errors');
    assert.equal(r.policy, 1);
    assert.equal(r.tried.number.code, 'ERR_INVALID_ARG_TYPE');
    assert.equal(r.tried.number.name, 'TypeError');
    assert.equal(r.tried.true.code, 'ERR_INVALID_ARG_VALUE');
    assert.equal(r.tried.cookie.code, 'ERR_INVALID_ARG_VALUE');
    assert.equal(r.tried.ip.code, 'ERR_INVALID_ARG_VALUE');
    assert.match(r.tried.ip.message, /options\.sticky.*SCHED_NONE/);
    assert.equal(r.tried.null, 'ok', 'null is off, as for metrics');
    assert.deepEqual(r.served, { ok: true, body: '1' });
    const rr = await fixtureResult(fixture('sticky-primary.js'),
      { args: ['errors'], env: { ...process.env, NODE_CLUSTER_SCHED_POLICY: 'rr' } }, 'sticky errors rr');
    assert.equal(rr.tried.ip, 'ok', 'accepted with SCHED_RR');
    assert.equal(rr.tried.cookie.code, 'ERR_INVALID_ARG_VALUE');
  });

test('socket.io long-polling on 2 workers with @socket.io/cluster-adapter and no @socket.io/sticky',
  { timeout: TEST_TIMEOUT }, async () => {
    const r = await fixtureResult(fixture('sticky-socketio.js'), {}, 'socket.io', 45000);
    assert.deepEqual(r.errors, []);
    for (const c of r.clients) {
      assert.equal(c.seenBy, `::ffff:${c.address}`, 'the client really connected from its address');
      assert.deepEqual(c.got, [{ text: 'one', from: r.clients[0].worker }], `${c.address} got the broadcast`);
    }
    assert.equal(new Set(r.clients.map((c) => c.worker)).size, 2, 'clients on both workers');
  });
