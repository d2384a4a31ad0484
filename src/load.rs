//! Load-aware reuseport: the queue watcher. A reuseport group's kernel hash is
//! blind: a worker whose event loop is stuck (GC, a synchronous read, a CPU-heavy
//! request) keeps getting its share of new connections, which wait until it
//! comes back. The core samples each member's accept queue every `FAST_TICK`
//! (1 ms) while some queue holds connections, every `LOAD_TICK` (10 ms) once
//! all have been empty for a while, and not at all once they have stayed empty
//! (the first connection queued wakes it). A member with connections waiting whose
//! worker has not read its IPC channel for `STALL_AFTER` (3 ms) is *stalled*:
//! the steering program leaves it out (one `setsockopt`); after `DRAIN_AFTER`
//! (10 ms) the primary also accepts what waits in its queue and hands it to
//! the other workers (the path a departed worker's queue takes). It is back in
//! as soon as its worker reads its channel again.
//!
//! Why the channel: under full load a healthy worker's queue is non-empty at
//! most instants too, so the queue alone cannot tell busy from stuck. An
//! unmodified Node worker reads its channel on every turn of its event loop,
//! so the core writes a tiny internal message (Node's worker code ignores it)
//! when it sees a queue, and asks the kernel whether it was read
//! (`SIOCOUTQ`: what the peer has not read yet). Bytes already unread serve
//! as the probe, and a worker that has read any of them since the last look
//! is turning its loop (a worker the primary floods with messages has bytes
//! unread at every look, and is not stalled for it). SIOCOUTQ on a Unix
//! socket counts the kernel memory of the unread buffers, at least their
//! bytes: so unless the worker read, it grows by at least what was written
//! since the last look (`Outbox::sent`).
//!
//! Costs: with every member healthy and idle, nothing: after a few quiet
//! looks the watcher stops ticking until a connection is queued on some
//! member (`primary::stalls`); with a trickle of connections one wake-up of the
//! core thread per 10 ms and one `getsockopt` per member; under load, 1000 wake-ups a
//! second and at most one probe message out per worker. Nothing per
//! connection until a member has stalled for `DRAIN_AFTER`: under full load a
//! healthy worker that the scheduler takes off the CPU for a few ms is steered
//! away from now and then, which costs a `setsockopt`, not a hand-off.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::dispatch::{accept_queue_len, Acceptor};
use crate::handles::{Deliver, ReusePortGroup, Slot};

/// How often accept queues are sampled while every queue is empty, for a
/// while after a connection (then the watcher waits for the next one). Fixed
/// (it does not depend on the connection rate).
pub const LOAD_TICK: Duration = Duration::from_millis(10);

/// How often they are sampled while some member has connections waiting (or a
/// probe out, or a stall): a stall must be seen within a few ms, because at
/// ~10k connections a second a waiting queue collects the whole load generator
/// within a few ms, and a CPU burn of 20 ms is over before a slower detector
/// fires. Cost under full load: ~1000 wake-ups a second of a few µs.
pub const FAST_TICK: Duration = Duration::from_millis(1);

/// A probe left unread this long while connections wait makes a member
/// stalled. Longer than a healthy, saturated worker's event-loop turn
/// (a batch of accepts and requests, a scavenge: ~1 ms), much shorter than the
/// pauses that hurt a tail.
pub const STALL_AFTER: Duration = Duration::from_millis(3);

/// A stalled member's queue is taken by the primary (one hand-off per
/// connection) once its probe is this old. Steering away costs one
/// `setsockopt` and nothing per connection, so it may fire on a healthy
/// worker that the scheduler took off the CPU for a few ms; draining costs
/// per connection, so it waits until the stall is clearly not a hiccup.
pub const DRAIN_AFTER: Duration = Duration::from_millis(10);

/// Stalls seen since the process started (every group, every member).
pub static STALLS: AtomicU64 = AtomicU64::new(0);
/// Connections the primary took from stalled members' queues.
pub static TAKEN_FROM_STALLED: AtomicU64 = AtomicU64::new(0);

/// One sample of a member.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
  /// Connections waiting in its accept queue.
  pub queued: usize,
  /// Its worker has not read everything the primary wrote on its channel.
  pub unread: bool,
  /// Its worker has read from its channel since the last sample.
  pub reading: bool,
  /// When it was taken (any monotonic clock).
  pub at: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
  Stalled,
  Recovered,
}

/// What one sample leads to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Step {
  pub verdict: Option<Verdict>,
  /// Write a probe on the worker's channel.
  pub probe: bool,
  /// Sample again soon (`FAST_TICK`): connections wait, a probe is out, or it
  /// stalls.
  pub busy: bool,
}

/// The watcher's memory of one member.
#[derive(Clone, Debug, Default)]
pub struct Watch {
  /// When the probe its worker has not read yet was written (or unread
  /// bytes were first seen with no progress).
  probed_at: Option<Duration>,
  pub stalled: bool,
  /// Its channel at the last look.
  last: Option<ChannelLevel>,
}

/// The primary's end of a worker's channel at one look.
#[derive(Clone, Copy, Debug)]
pub struct ChannelLevel {
  /// Kernel memory held by what the worker has not read yet (SIOCOUTQ:
  /// buffers, at least as much as their bytes).
  pub unread: usize,
  /// Bytes written by the primary, ever.
  pub sent: u64,
}

impl Watch {
  /// (unread, reading) for a `Sample`: it read since the last look if what
  /// it left unread grew by less than what was written meanwhile. A new
  /// worker in the slot (its own `sent` count) may look as if it read, once.
  pub fn look(&mut self, c: ChannelLevel) -> (bool, bool) {
    let reading = self.last.is_some_and(|l| {
      let grew = c.unread as i128 - l.unread as i128;
      grew < c.sent.wrapping_sub(l.sent) as i128
    });
    self.last = Some(c);
    (c.unread > 0, reading)
  }

  /// How long its worker has not read its channel, if it is stalled.
  pub fn stalled_for(&self, at: Duration) -> Option<Duration> {
    self.probed_at.filter(|_| self.stalled).map(|t| at.saturating_sub(t))
  }
}

/// Whether the primary should take the queue of a member stalled for
/// `stalled`, given every member's (`members`' input): once it is clearly not
/// a hiccup, and only while some member is not stalled — with all of them
/// stalled there is nobody to hand connections to, and they wait where they
/// are.
pub fn drains(stalled: Option<Duration>, mut all: impl Iterator<Item = Option<Duration>>) -> bool {
  stalled.is_some_and(|d| d >= DRAIN_AFTER) && all.any(|s| s.is_none())
}

impl Watch {
  /// The decision, a pure function of the samples. Hysteresis: it takes a
  /// waiting queue *and* a probe left unread for `STALL_AFTER` to stall, and
  /// the worker reading its channel again to recover (its queue is empty by
  /// then: the primary drains it).
  pub fn sample(&mut self, s: Sample) -> Step {
    let alive = !s.unread || s.reading;
    if alive {
      self.probed_at = None;
    }
    if self.stalled {
      if !alive {
        return Step {
          busy: true,
          ..Step::default()
        };
      }
      self.stalled = false;
      return Step {
        verdict: Some(Verdict::Recovered),
        probe: false,
        busy: s.queued > 0,
      };
    }
    let out = self.probed_at.is_some();
    if s.queued == 0 {
      return Step {
        busy: out,
        ..Step::default()
      };
    }
    match self.probed_at {
      Some(t) if s.at.saturating_sub(t) >= STALL_AFTER => {
        self.stalled = true;
        Step {
          verdict: Some(Verdict::Stalled),
          probe: false,
          busy: true,
        }
      }
      Some(_) => Step {
        busy: true,
        ..Step::default()
      },
      None => {
        self.probed_at = Some(s.at);
        Step {
          verdict: None,
          // Bytes it has yet to read will do as a probe.
          probe: !s.unread,
          busy: true,
        }
      }
    }
  }
}

/// The members the steering program may pick, from (member, how long it has
/// stalled — `None`: it has not): those that have not stalled — or, when all
/// of them have, the one that stalled last (steering everything away would
/// leave the kernel nowhere to put a connection; and under full load a healthy
/// worker's long turn looks like a short stall: better to send it everything
/// than to give half back to a worker blocked for much longer).
pub fn members(owned: impl Iterator<Item = (u32, Option<Duration>)> + Clone) -> Vec<u32> {
  let healthy: Vec<u32> = owned.clone().filter(|(_, s)| s.is_none()).map(|(i, _)| i).collect();
  if !healthy.is_empty() {
    return healthy;
  }
  let shortest = owned.clone().filter_map(|(_, s)| s).min();
  owned.filter(|(_, s)| *s == shortest).map(|(i, _)| i).take(1).collect()
}

/// What one sample of a group found.
#[derive(Debug, Default)]
pub struct Watched {
  /// Workers to write a probe to.
  pub probes: Vec<u32>,
  /// A member stalled or recovered: the group must be steered again.
  pub changed: bool,
  /// Some member wants a sample again soon (`Step::busy`).
  pub busy: bool,
  /// The sampled members' listening sockets (valid while the group lives),
  /// for a watcher that waits for a connection instead of ticking.
  pub queues: Vec<RawFd>,
}

/// Samples every member of `g` that has a worker (`channel`: its channel's
/// level, `None` once disconnected), then drains the stalled ones —
/// only while some member is healthy: with every worker stalled there is
/// nobody to hand connections to, and they wait where they are. The
/// primary-accepted connections go through `deliver` to the group's
/// dispatcher, whose workers are the healthy ones.
pub fn watch_group(
  g: &mut ReusePortGroup,
  channel: &dyn Fn(u32) -> Option<ChannelLevel>,
  deliver: &Deliver,
) -> Watched {
  let mut out = Watched::default();
  let at = clock();
  for slot in g.slots.iter_mut() {
    let Some(owner) = slot.owner else { continue };
    let queue = accept_queue_len(slot.sock.as_raw_fd());
    // Only a listener's readability means a connection waits.
    if queue.is_some() {
      out.queues.push(slot.sock.as_raw_fd());
    }
    let queued = queue.unwrap_or(0);
    let (unread, reading) = channel(owner).map_or((false, false), |c| slot.watch.look(c));
    let step = slot.watch.sample(Sample {
      queued,
      unread,
      reading,
      at,
    });
    out.busy |= step.busy;
    if step.probe {
      out.probes.push(owner);
    }
    match step.verdict {
      Some(Verdict::Stalled) => {
        count_stall();
        out.changed = true;
      }
      Some(Verdict::Recovered) => out.changed = true,
      None => {}
    }
  }
  let stalls: Vec<Option<Duration>> = (g.slots.iter().filter(|s| s.owner.is_some()))
    .map(|s| s.watch.stalled_for(at))
    .collect();
  for slot in g.slots.iter_mut().filter(|s| s.owner.is_some()) {
    if drains(slot.watch.stalled_for(at), stalls.iter().copied()) {
      if slot.drain.is_none() {
        slot.drain = start_drain(slot, deliver);
      }
    } else {
      // The worker accepts again (or nobody else can): its queue is its own.
      slot.drain = None;
    }
  }
  // A stall or a recovery (`changed`) makes the group steer again: the
  // kernel and the dispatcher both (`ReusePortGroup::steer`).
  out
}

/// Drains a stalled member, counting what it takes.
fn start_drain(slot: &Slot, deliver: &Deliver) -> Option<Acceptor> {
  let d = deliver.clone();
  slot.start_drain(std::sync::Arc::new(move |conns| {
    count_taken(conns.len());
    d(conns)
  }))
}

/// Time since the first call: a monotonic clock for `Sample::at`.
pub fn clock() -> Duration {
  static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
  START.get_or_init(std::time::Instant::now).elapsed()
}

/// Bytes written on a stream socket that its peer has not read yet (0 if
/// the kernel cannot say).
pub fn unread(fd: RawFd) -> usize {
  let mut n: libc::c_int = 0;
  // SAFETY: SIOCOUTQ (TIOCOUTQ) writes one int.
  let rc = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) };
  if rc == 0 {
    n.max(0) as usize
  } else {
    0
  }
}

pub fn count_stall() {
  STALLS.fetch_add(1, Ordering::Relaxed);
}

pub fn count_taken(n: usize) {
  TAKEN_FROM_STALLED.fetch_add(n as u64, Ordering::Relaxed);
}

/// (stalls, connections taken from stalled queues) so far.
pub fn counters() -> (u64, u64) {
  (
    STALLS.load(Ordering::Relaxed),
    TAKEN_FROM_STALLED.load(Ordering::Relaxed),
  )
}

#[cfg(test)]
mod tests {
  use super::*;

  fn look(queued: usize, (unread, reading): (bool, bool), at: Duration) -> Sample {
    Sample {
      queued,
      unread,
      reading,
      at,
    }
  }

  /// One sample per `FAST_TICK`, from `t0` (the worker never reads).
  fn run_from(w: &mut Watch, t0: Duration, samples: &[(usize, bool)]) -> Vec<Step> {
    (samples.iter().enumerate())
      .map(|(i, &(queued, unread))| w.sample(look(queued, (unread, false), t0 + FAST_TICK * i as u32)))
      .collect()
  }

  fn run(w: &mut Watch, samples: &[(usize, bool)]) -> Vec<Step> {
    run_from(w, Duration::ZERO, samples)
  }

  /// Ticks from the probe to the stall.
  const N: usize = (STALL_AFTER.as_millis() / FAST_TICK.as_millis()) as usize;

  fn verdicts(steps: &[Step]) -> Vec<Option<Verdict>> {
    steps.iter().map(|s| s.verdict).collect()
  }

  #[test]
  fn a_waiting_queue_and_an_unread_probe_stall() {
    let mut w = Watch::default();
    let mut samples = vec![(0, false), (3, false)];
    samples.extend(std::iter::repeat_n((7, true), N));
    let steps = run(&mut w, &samples);
    let mut want = vec![None; N + 1];
    want.push(Some(Verdict::Stalled));
    assert_eq!(verdicts(&steps), want, "stalled once the probe is {STALL_AFTER:?} old");
    assert!(steps[1].probe, "the first waiting queue sends a probe");
    assert!(steps[2..].iter().all(|s| !s.probe), "one probe out at a time");
    assert!(
      !steps[0].busy && steps[1..].iter().all(|s| s.busy),
      "fast ticks while it waits"
    );
    assert!(w.stalled);
  }

  #[test]
  fn a_turn_shorter_than_the_limit_is_not_a_stall() {
    let mut w = Watch::default();
    // A saturated worker: its queue never empties, each probe is read after
    // almost `STALL_AFTER`.
    let mut samples = Vec::new();
    for _ in 0..10 {
      samples.push((4, false));
      samples.extend(std::iter::repeat_n((4, true), N - 1));
    }
    let steps = run(&mut w, &samples);
    assert!(verdicts(&steps).iter().all(Option::is_none));
    assert!(!w.stalled);
  }

  #[test]
  fn an_old_unread_probe_stalls_at_the_first_waiting_queue() {
    let mut w = Watch::default();
    // A probe went out, the queue emptied, the worker blocked; then a
    // connection arrives.
    let steps = run(
      &mut w,
      &[(1, false), (0, true), (0, true), (0, true), (0, true), (1, true)],
    );
    assert_eq!(verdicts(&steps).last().unwrap(), &Some(Verdict::Stalled));
  }

  #[test]
  fn the_clock_not_the_tick_count_decides() {
    let mut w = Watch::default();
    // Two late ticks, 10 ms apart, are enough.
    let a = w.sample(look(2, (false, false), Duration::from_millis(100)));
    let b = w.sample(look(2, (true, false), Duration::from_millis(110)));
    assert!(a.probe);
    assert_eq!(b.verdict, Some(Verdict::Stalled));
  }

  #[test]
  fn a_busy_worker_that_reads_its_channel_is_not_stalled() {
    let mut w = Watch::default();
    // Its queue never empties, but every probe is read by the next sample.
    let steps = run(&mut w, &[(5, false); 20]);
    assert!(verdicts(&steps).iter().all(Option::is_none));
    assert!(steps.iter().all(|s| s.probe), "one probe per tick at most");
    let idle = run_from(&mut w, Duration::from_secs(1), &[(0, false); 3]);
    assert!(
      idle.iter().all(|s| !s.busy && !s.probe),
      "slow ticks when nothing waits"
    );
    assert!(!w.stalled);
  }

  #[test]
  fn a_queue_that_empties_resets_the_count() {
    let mut w = Watch::default();
    // Unread bytes alone (a large message on its way) are not a stall.
    let steps = run(
      &mut w,
      &[(1, false), (0, true), (0, false), (1, false), (0, true), (0, false)],
    );
    assert!(verdicts(&steps).iter().all(Option::is_none));
    assert!(!w.stalled);
  }

  #[test]
  fn recovers_when_the_worker_reads_again() {
    let mut w = Watch::default();
    let mut samples = vec![(2, false)];
    samples.extend(std::iter::repeat_n((4, true), N));
    samples.extend([(0, true), (0, true), (0, false), (0, false)]);
    let steps = run(&mut w, &samples);
    let v = verdicts(&steps);
    assert_eq!(v[N], Some(Verdict::Stalled));
    assert_eq!(
      &v[N + 1..N + 3],
      &[None, None],
      "stays stalled while the probe is unread"
    );
    assert!(steps[N + 1].busy, "a stalled member is sampled fast");
    assert_eq!(v[N + 3], Some(Verdict::Recovered));
    assert_eq!(v[N + 4], None);
    assert!(!w.stalled);
    // And it can stall again.
    let mut again = vec![(1, false)];
    again.extend(std::iter::repeat_n((1, true), N));
    let again = run_from(&mut w, Duration::from_secs(1), &again);
    assert_eq!(verdicts(&again).last().unwrap(), &Some(Verdict::Stalled));
  }

  const MS: fn(u64) -> Option<Duration> = |ms| Some(Duration::from_millis(ms));

  #[test]
  fn never_steers_everything_away() {
    let all_stalled = [(0, MS(50)), (1, MS(4)), (2, MS(90))];
    assert_eq!(
      members(all_stalled.into_iter()),
      vec![1],
      "all stalled: the one that stalled last"
    );
    let one = [(0, None), (1, MS(4)), (2, None)];
    assert_eq!(members(one.into_iter()), vec![0, 2]);
    assert!(members(std::iter::empty()).is_empty());
  }

  #[test]
  fn a_queue_is_taken_only_from_a_long_stall_with_someone_to_take_it() {
    let none = None;
    assert!(!drains(none, [none, none].into_iter()), "not stalled");
    let short = DRAIN_AFTER - Duration::from_millis(1);
    assert!(
      !drains(Some(short), [Some(short), none].into_iter()),
      "a hiccup: steered away, queue kept"
    );
    assert!(drains(Some(DRAIN_AFTER), [Some(DRAIN_AFTER), none].into_iter()));
    // Everyone stalled: the connections wait where they are.
    let long = MS(200).unwrap();
    assert!(!drains(Some(long), [Some(long), MS(3)].into_iter()));
    assert!(drains(Some(long), [Some(long), none].into_iter()));
  }

  #[test]
  fn unread_bytes_are_seen_until_the_peer_reads() {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    let (mut a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
    assert_eq!(unread(a.as_raw_fd()), 0);
    a.write_all(b"probe\n").unwrap();
    // Kernel memory, not bytes: at least the 6 bytes written.
    let held = unread(a.as_raw_fd());
    assert!(held >= 6, "{held}");
    a.write_all(&[b'x'; 1000]).unwrap();
    let mut w = Watch::default();
    w.look(ChannelLevel { unread: held, sent: 6 });
    let (unread_now, reading) = w.look(ChannelLevel {
      unread: unread(a.as_raw_fd()),
      sent: 1006,
    });
    assert!(unread_now && !reading, "written, not read: it grew by at least 1000");
    let mut buf = [0u8; 16];
    let _ = b.read(&mut buf).unwrap();
    let (_, reading) = w.look(ChannelLevel {
      unread: unread(a.as_raw_fd()),
      sent: 1006,
    });
    assert!(reading, "the first buffer was read");
    let mut rest = [0u8; 2000];
    let _ = b.read(&mut rest).unwrap();
    assert_eq!(unread(a.as_raw_fd()), 0);
  }

  #[test]
  fn a_worker_flooded_with_messages_that_keeps_reading_never_stalls() {
    let mut w = Watch::default();
    // Bytes are unread at every look, but fewer of those written so far each
    // time: it reads. No probe either (the unread bytes are one).
    let mut sent = 0u64;
    for i in 0..(4 * N as u32) {
      sent += 100_000;
      let level = w.look(ChannelLevel { unread: 150_000, sent });
      let step = w.sample(look(3, level, FAST_TICK * i));
      assert_eq!(step.verdict, None, "look {i}");
      assert!(!step.probe, "look {i}");
    }
    // It stops reading: nothing more leaves, the same bytes stay unread.
    let t = FAST_TICK * (4 * N as u32);
    let steps: Vec<Step> = (0..=N as u32 + 1)
      .map(|i| {
        let level = w.look(ChannelLevel { unread: 150_000, sent });
        w.sample(look(3, level, t + FAST_TICK * i))
      })
      .collect();
    assert!(!steps[0].probe, "the unread bytes serve as the probe");
    assert!(verdicts(&steps).contains(&Some(Verdict::Stalled)));
  }
}
