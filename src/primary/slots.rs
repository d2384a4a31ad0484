//! Supervised slots: which worker occupies each, the spec its replacements
//! are spawned with, its backoff, and whether a restart is pending. The
//! policy (delays, crash loops) is `supervisor`'s; this decides per slot and
//! returns the decision; the loop spawns and schedules.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use super::events::{EventSink, ExitDecision};
use super::session::Standing;
use crate::spawn::SpawnSpec;
use crate::supervisor::{Backoff, Decision, Supervision};

/// A supervised position in the cluster.
struct Slot {
  /// The one spawn spec of the slot: its first worker's (or a reload's
  /// successor's), used for every restart.
  spec: SpawnSpec,
  sink: EventSink,
  supervision: Supervision,
  backoff: Option<Backoff>,
  /// The worker now occupying the slot (during a reload, the newest).
  current: u32,
  /// A restart is scheduled.
  pending: bool,
  /// Where its current worker must listen for the slot to be ready: what
  /// its workers listened on (`{addressType}:{address}:{port}`).
  serves: BTreeSet<String>,
}

/// What a restart is spawned with.
pub struct Respawn {
  pub spec: SpawnSpec,
  pub sink: EventSink,
  pub supervision: Supervision,
}

#[derive(Default)]
pub struct Slots {
  slots: HashMap<u32, Slot>,
  /// Restarts made per slot: kept when the slot stops being supervised
  /// (crash loop, shutdown), dropped by `forget` (scale-down).
  restarts: HashMap<u32, u32>,
  /// Slots given up after a crash loop, with their crash count, until a
  /// worker is forked into them again.
  crash_looped: BTreeMap<u32, u32>,
  /// Crash loops ever.
  crash_loops: u64,
}

/// The slots as `cluster.fork()`, `scale()` and `stats()` need them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SlotView {
  /// The lowest slot neither occupied nor waiting for a restart.
  pub free: u32,
  /// Slots held by a worker (alive, not retired by the primary: JS forgets
  /// those at once) or waiting for a restart, ascending.
  pub occupied: Vec<u32>,
  /// Slots waiting out their restart delay, ascending.
  pub pending: Vec<u32>,
  /// `(slot, restarts)` for every slot that restarted, ascending.
  pub restarts: Vec<(u32, u32)>,
}

/// The lowest slot not in `taken`.
pub fn free_slot(taken: &BTreeSet<u32>) -> u32 {
  (0..).find(|s| !taken.contains(s)).expect("fewer than 2^32 slots")
}

impl Slots {
  /// `id` now occupies its slot (a fork into it, a restart, a promoted
  /// successor): later restarts use `spec`.
  pub fn supervise(&mut self, id: u32, spec: SpawnSpec, sink: EventSink, supervision: Supervision) {
    match self.slots.get_mut(&supervision.slot) {
      Some(s) => {
        s.current = id;
        s.spec = spec;
        s.sink = sink;
        s.pending = false;
      }
      None => {
        self.crash_looped.remove(&supervision.slot);
        let backoff = supervision.restart.clone().map(Backoff::new);
        self.slots.insert(
          supervision.slot,
          Slot {
            spec,
            sink,
            supervision,
            backoff,
            current: id,
            pending: false,
            serves: BTreeSet::new(),
          },
        );
      }
    }
  }

  /// Scale-down, shutdown: no more restarts for `slot`.
  pub fn unsupervise(&mut self, slot: u32) {
    self.slots.remove(&slot);
  }

  pub fn any_pending(&self) -> bool {
    self.slots.values().any(|s| s.pending)
  }

  /// A restart of `slot` was spawned.
  pub fn respawned(&mut self, slot: u32) {
    *self.restarts.entry(slot).or_default() += 1;
  }

  /// The slot is gone for good (scale-down): its restart count goes too.
  pub fn forget(&mut self, slot: u32) {
    self.slots.remove(&slot);
    self.restarts.remove(&slot);
    self.crash_looped.remove(&slot);
  }

  /// Worker `id` listens on `address`: the slot serves it, if `id` is the
  /// slot's current worker (a reload's standby counts once promoted).
  pub fn listened(&mut self, slot: u32, id: u32, address: &str) {
    if let Some(s) = self.slots.get_mut(&slot).filter(|s| s.current == id) {
      s.serves.insert(address.to_owned());
    }
  }

  /// A promoted successor's addresses replace its predecessor's.
  pub fn set_serves(&mut self, slot: u32, addresses: BTreeSet<String>) {
    if let Some(s) = self.slots.get_mut(&slot) {
      s.serves = addresses;
    }
  }

  /// Each supervised slot with its current worker, whether a restart is
  /// pending and the addresses it serves, ascending by slot.
  pub fn states(&self) -> Vec<(u32, u32, bool, &BTreeSet<String>)> {
    let mut out: Vec<_> = self
      .slots
      .iter()
      .map(|(k, s)| (*k, s.current, s.pending, &s.serves))
      .collect();
    out.sort_unstable_by_key(|x| x.0);
    out
  }

  /// Slots given up after a crash loop (slot, crashes), and how many crash loops there were.
  pub fn crash_loops(&self) -> (&BTreeMap<u32, u32>, u64) {
    (&self.crash_looped, self.crash_loops)
  }

  /// The view for JS, given the slots the workers hold now.
  pub fn view(&self, live: impl IntoIterator<Item = u32>) -> SlotView {
    let pending: BTreeSet<u32> = self.slots.iter().filter(|(_, s)| s.pending).map(|(k, _)| *k).collect();
    let occupied: BTreeSet<u32> = live.into_iter().chain(pending.iter().copied()).collect();
    let mut restarts: Vec<(u32, u32)> = self.restarts.iter().map(|(k, v)| (*k, *v)).collect();
    restarts.sort_unstable();
    SlotView {
      free: free_slot(&occupied),
      occupied: occupied.into_iter().collect(),
      pending: pending.into_iter().collect(),
      restarts,
    }
  }

  /// Worker `id` of `slot` is gone after `uptime`, standing as it was.
  /// `None`: nothing happens (replaced already, left on purpose, no restarts).
  pub fn worker_gone(
    &mut self,
    slot: u32,
    id: u32,
    standing: Standing,
    uptime: Duration,
    now: Instant,
  ) -> Option<ExitDecision> {
    let s = self.slots.get_mut(&slot)?;
    if s.current != id {
      return None; // replaced already (reload)
    }
    let decision = match (standing, &mut s.backoff) {
      (Standing::Hung, _) => Decision::Restart { after: Duration::ZERO },
      // Deliberate: disconnect(), scale-down, shutdown.
      (Standing::Leaving | Standing::Retired, _) | (_, None) => {
        self.slots.remove(&slot);
        return None;
      }
      (_, Some(b)) => b.on_crash(now, uptime),
    };
    Some(self.decided(slot, decision))
  }

  /// The restart of `slot` could not be spawned: a crash of the slot.
  /// Returns the slot's current (dead) worker and what happens next.
  pub fn respawn_failed(&mut self, slot: u32, now: Instant) -> Option<(u32, ExitDecision)> {
    let s = self.slots.get_mut(&slot)?;
    let decision = match s.backoff.as_mut() {
      Some(b) => b.on_crash(now, Duration::ZERO),
      None => Decision::CrashLoop { crashes: 1 },
    };
    let current = s.current;
    Some((current, self.decided(slot, decision)))
  }

  /// The spec to restart `slot` with, if its restart is still wanted.
  pub fn respawn(&self, slot: u32) -> Option<Respawn> {
    let s = self.slots.get(&slot).filter(|s| s.pending)?;
    Some(Respawn {
      spec: s.spec.clone(),
      sink: s.sink.clone(),
      supervision: s.supervision.clone(),
    })
  }

  fn decided(&mut self, slot: u32, decision: Decision) -> ExitDecision {
    match decision {
      Decision::Restart { after } => {
        if let Some(s) = self.slots.get_mut(&slot) {
          s.pending = true;
        }
        ExitDecision::Restart { slot, delay: after }
      }
      Decision::CrashLoop { crashes } => {
        self.slots.remove(&slot);
        self.crash_looped.insert(slot, crashes);
        self.crash_loops += 1;
        ExitDecision::CrashLoop { slot, crashes }
      }
    }
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::framing::Serialization;
  use crate::supervisor::RestartPolicy;
  use std::sync::Arc;

  fn spec() -> SpawnSpec {
    SpawnSpec {
      file: "node".into(),
      args: vec![],
      env: vec![],
      cwd: None,
      stdio: vec![],
      uid: None,
      gid: None,
      serialization: Serialization::Advanced,
      death_signal: false,
    }
  }

  fn supervised(slot: u32, restart: bool) -> Supervision {
    Supervision {
      slot,
      restart: restart.then(|| RestartPolicy {
        max_restarts: 1,
        ..RestartPolicy::default()
      }),
      ..Supervision::default()
    }
  }

  fn slots_with(slot: u32, id: u32, restart: bool) -> Slots {
    let mut s = Slots::default();
    s.supervise(id, spec(), Arc::new(|_, _| {}), supervised(slot, restart));
    s
  }

  #[test]
  fn a_crash_restarts_with_the_slots_spec_until_the_crash_loop() {
    let now = Instant::now();
    let mut s = slots_with(0, 1, true);
    let d = s.worker_gone(0, 1, Standing::Serving, Duration::ZERO, now);
    assert_eq!(
      d,
      Some(ExitDecision::Restart {
        slot: 0,
        delay: Duration::from_millis(100)
      })
    );
    assert!(s.any_pending());
    let r = s.respawn(0).expect("pending");
    assert_eq!(r.spec.serialization, Serialization::Advanced);
    s.supervise(2, r.spec, r.sink, r.supervision);
    assert!(!s.any_pending());
    let d = s.worker_gone(0, 2, Standing::Recycling, Duration::ZERO, now);
    assert_eq!(d, Some(ExitDecision::CrashLoop { slot: 0, crashes: 2 }));
    assert!(s.respawn(0).is_none(), "the slot is given up");
  }

  #[test]
  fn crash_loops_are_remembered_until_the_slot_is_forked_into_again() {
    let now = Instant::now();
    let mut s = slots_with(0, 1, true);
    s.listened(0, 1, "4:127.0.0.1:80");
    s.listened(0, 9, "4:127.0.0.1:81"); // not the slot's current worker
    assert_eq!(s.states()[0].3.iter().collect::<Vec<_>>(), ["4:127.0.0.1:80"]);
    s.worker_gone(0, 1, Standing::Serving, Duration::ZERO, now);
    let r = s.respawn(0).unwrap();
    s.supervise(2, r.spec, r.sink, r.supervision);
    assert_eq!(s.states()[0].3.len(), 1, "a restart serves the same addresses");
    s.worker_gone(0, 2, Standing::Serving, Duration::ZERO, now);
    assert!(s.states().is_empty());
    assert_eq!(s.crash_loops().0.get(&0), Some(&2));
    assert_eq!(s.crash_loops().1, 1);
    s.supervise(3, spec(), Arc::new(|_, _| {}), supervised(0, true));
    assert!(s.crash_loops().0.is_empty(), "forked into again");
    assert_eq!(s.crash_loops().1, 1, "the count stays");
  }

  #[test]
  fn leaving_replaced_and_unrestarted_workers_are_not_restarted() {
    let now = Instant::now();
    let mut s = slots_with(0, 1, true);
    assert_eq!(
      s.worker_gone(0, 7, Standing::Serving, Duration::ZERO, now),
      None,
      "not the current worker"
    );
    assert_eq!(s.worker_gone(0, 1, Standing::Leaving, Duration::ZERO, now), None);
    assert!(s.respawn(0).is_none());
    let mut s = slots_with(3, 1, false);
    assert_eq!(s.worker_gone(3, 1, Standing::Serving, Duration::ZERO, now), None);
    // A hung worker is replaced at once even without a restart policy.
    let mut s = slots_with(3, 1, false);
    let d = s.worker_gone(3, 1, Standing::Hung, Duration::ZERO, now);
    assert_eq!(
      d,
      Some(ExitDecision::Restart {
        slot: 3,
        delay: Duration::ZERO
      })
    );
  }

  #[test]
  fn the_view_numbers_free_slots_around_live_and_pending_ones() {
    assert_eq!(free_slot(&BTreeSet::new()), 0);
    assert_eq!(free_slot(&[0, 1, 3].into_iter().collect()), 2);
    let now = Instant::now();
    let mut s = slots_with(1, 5, true);
    s.worker_gone(1, 5, Standing::Serving, Duration::ZERO, now);
    let v = s.view([0, 2]);
    assert_eq!((v.free, v.occupied, v.pending), (3, vec![0, 1, 2], vec![1]));
    s.respawned(1);
    s.respawned(1);
    s.unsupervise(1);
    let v = s.view([0]);
    assert_eq!((v.free, v.restarts), (1, vec![(1, 2)]), "counts outlive supervision");
    s.forget(1);
    assert_eq!(s.view([]).restarts, vec![]);
  }

  #[test]
  fn failed_restarts_count_as_crashes() {
    let now = Instant::now();
    let mut s = slots_with(0, 1, true);
    s.worker_gone(0, 1, Standing::Serving, Duration::ZERO, now);
    let (current, d) = s.respawn_failed(0, now).unwrap();
    assert_eq!(current, 1);
    assert_eq!(d, ExitDecision::CrashLoop { slot: 0, crashes: 2 });
  }
}
