//! Supervision policy: when to restart a crashed worker, when to give up on a
//! crash-looping slot, and what a worker's process costs (RSS, CPU).
//!
//! A *slot* is a position in the cluster (0, 1, …) that outlives the workers
//! occupying it: a crashed worker's replacement, or a reloaded worker's
//! successor, takes the same slot. The decisions here are pure functions of
//! time so they can be tested without processes; `primary` acts on them.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, PartialEq)]
pub struct RestartPolicy {
  /// Delay before the first restart.
  pub initial: Duration,
  /// The delay doubles (×`factor`) per consecutive crash up to this cap.
  pub max: Duration,
  pub factor: f64,
  /// A worker that ran at least this long resets the delay to `initial`.
  pub stable_after: Duration,
  /// More than this many crashes within `window` is a crash loop: the slot
  /// is not restarted again.
  pub max_restarts: u32,
  pub window: Duration,
}

impl Default for RestartPolicy {
  fn default() -> Self {
    RestartPolicy {
      initial: Duration::from_millis(100),
      max: Duration::from_secs(10),
      factor: 2.0,
      stable_after: Duration::from_secs(10),
      max_restarts: 10,
      window: Duration::from_secs(60),
    }
  }
}

#[derive(Debug, PartialEq)]
pub enum Decision {
  Restart { after: Duration },
  CrashLoop { crashes: u32 },
}

/// Restart bookkeeping for one slot.
#[derive(Debug)]
pub struct Backoff {
  policy: RestartPolicy,
  next: Duration,
  crashes: VecDeque<Instant>,
  pub restarts: u32,
}

impl Backoff {
  pub fn new(policy: RestartPolicy) -> Self {
    Backoff {
      next: policy.initial,
      policy,
      crashes: VecDeque::new(),
      restarts: 0,
    }
  }

  /// A worker of this slot crashed at `now` after running for `uptime`.
  pub fn on_crash(&mut self, now: Instant, uptime: Duration) -> Decision {
    if uptime >= self.policy.stable_after {
      self.next = self.policy.initial;
    }
    self.crashes.push_back(now);
    while self
      .crashes
      .front()
      .is_some_and(|t| now.duration_since(*t) > self.policy.window)
    {
      self.crashes.pop_front();
    }
    if self.crashes.len() as u32 > self.policy.max_restarts {
      return Decision::CrashLoop {
        crashes: self.crashes.len() as u32,
      };
    }
    let after = self.next;
    let grown = self.next.as_secs_f64() * self.policy.factor;
    let capped = Duration::try_from_secs_f64(grown.min(self.policy.max.as_secs_f64())).unwrap_or(self.policy.max);
    self.next = capped.max(self.policy.initial);
    self.restarts += 1;
    Decision::Restart { after }
  }
}

/// How a worker is supervised: its slot and what is watched.
#[derive(Clone, Debug, Default)]
pub struct Supervision {
  pub slot: u32,
  /// Restart after crashes; `None`: no restarts.
  pub restart: Option<RestartPolicy>,
  /// Kill and replace a worker that sent heartbeats and then fell silent.
  pub hang_timeout: Option<Duration>,
  pub max_memory: Option<u64>,
  pub max_age: Option<Duration>,
}

/// What the watchdog found wrong with a worker.
#[derive(Debug, PartialEq)]
pub enum Verdict {
  /// No heartbeat for `silent`: kill it and replace it at once.
  Hung { silent: Duration },
  /// Past `maxAge` (`"age"`) or `maxMemory` (`"memory"`): JS replaces it
  /// gracefully.
  Recycle { reason: &'static str },
}

impl Supervision {
  /// Whether the watchdog has anything to check for this worker.
  pub fn watched(&self) -> bool {
    self.hang_timeout.is_some() || self.max_memory.is_some() || self.max_age.is_some()
  }

  /// Whether the slot's sockets wait for a replacement when its worker dies.
  pub fn replaces_crashed(&self) -> bool {
    self.restart.is_some() || self.hang_timeout.is_some()
  }

  /// One watchdog look at a worker started at `started`; `rss` is asked only
  /// when a memory limit is set (it reads /proc).
  pub fn check(
    &self,
    now: Instant,
    started: Instant,
    last_heartbeat: Option<Instant>,
    rss: impl FnOnce() -> Option<u64>,
  ) -> Option<Verdict> {
    // Only a worker that sent heartbeats can fall silent.
    if let (Some(limit), Some(last)) = (self.hang_timeout, last_heartbeat) {
      let silent = now.duration_since(last);
      if silent > limit {
        return Some(Verdict::Hung { silent });
      }
    }
    if self.max_age.is_some_and(|age| now.duration_since(started) > age) {
      return Some(Verdict::Recycle { reason: "age" });
    }
    match self.max_memory {
      Some(max) if rss().is_some_and(|r| r > max) => Some(Verdict::Recycle { reason: "memory" }),
      _ => None,
    }
  }
}

/// What one process costs now, from /proc.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Usage {
  pub rss_bytes: u64,
  pub cpu_user_s: f64,
  pub cpu_system_s: f64,
}

/// Field `n` (1-based, as in proc(5)) of a /proc/<pid>/stat text, as a
/// number. Allocates nothing, so the reaper may use it after fork.
pub fn stat_field(stat: &[u8], n: usize) -> Option<u64> {
  // The command name (field 2) is in parentheses and may hold spaces and
  // parentheses: count from the last ')'; field 3 follows it.
  let close = stat.iter().rposition(|&b| b == b')')?;
  let field = stat.get(close + 2..)?.split(|&b| b == b' ').nth(n.checked_sub(3)?)?;
  std::str::from_utf8(field).ok()?.trim().parse().ok()
}

pub fn usage(pid: i32) -> Option<Usage> {
  let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
  let ticks = clock_ticks();
  let utime = stat_field(&stat, 14)? as f64;
  let stime = stat_field(&stat, 15)? as f64;
  let rss_pages = stat_field(&stat, 24)?;
  Some(Usage {
    rss_bytes: rss_pages * page_size(),
    cpu_user_s: utime / ticks,
    cpu_system_s: stime / ticks,
  })
}

fn clock_ticks() -> f64 {
  let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
  if t > 0 {
    t as f64
  } else {
    100.0
  }
}

fn page_size() -> u64 {
  let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
  if p > 0 {
    p as u64
  } else {
    4096
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
  }

  fn policy() -> RestartPolicy {
    RestartPolicy {
      initial: ms(100),
      max: ms(1000),
      factor: 2.0,
      stable_after: ms(5000),
      max_restarts: 4,
      window: ms(60_000),
    }
  }

  #[test]
  fn delay_doubles_up_to_the_cap() {
    let mut b = Backoff::new(policy());
    let t0 = Instant::now();
    let delays: Vec<_> = (0..4)
      .map(|i| match b.on_crash(t0 + ms(i * 10), ms(1)) {
        Decision::Restart { after } => after,
        d => panic!("{d:?}"),
      })
      .collect();
    assert_eq!(delays, vec![ms(100), ms(200), ms(400), ms(800)]);
    assert_eq!(b.restarts, 4);
  }

  #[test]
  fn crash_loop_past_the_limit_within_the_window() {
    let mut b = Backoff::new(policy());
    let t0 = Instant::now();
    for i in 0..4 {
      assert!(matches!(b.on_crash(t0 + ms(i), ms(1)), Decision::Restart { .. }));
    }
    assert_eq!(b.on_crash(t0 + ms(5), ms(1)), Decision::CrashLoop { crashes: 5 });
  }

  #[test]
  fn old_crashes_leave_the_window_and_stable_runs_reset_the_delay() {
    let mut b = Backoff::new(policy());
    let t0 = Instant::now();
    for i in 0..4 {
      b.on_crash(t0 + ms(i), ms(1));
    }
    // A minute later the old crashes no longer count, and a long run resets.
    let later = t0 + ms(61_000);
    assert_eq!(b.on_crash(later, ms(6000)), Decision::Restart { after: ms(100) });
    assert_eq!(b.on_crash(later + ms(1), ms(1)), Decision::Restart { after: ms(200) });
  }

  #[test]
  fn watchdog_verdicts() {
    let t0 = Instant::now();
    let sup = Supervision {
      hang_timeout: Some(ms(1000)),
      max_age: Some(ms(5000)),
      max_memory: Some(100),
      ..Supervision::default()
    };
    // No heartbeat yet: never hung, however long it has been.
    assert_eq!(sup.check(t0 + ms(4000), t0, None, || Some(1)), None);
    assert_eq!(
      sup.check(t0 + ms(4000), t0, Some(t0 + ms(2000)), || Some(1)),
      Some(Verdict::Hung { silent: ms(2000) })
    );
    assert_eq!(
      sup.check(t0 + ms(6000), t0, Some(t0 + ms(5500)), || Some(1)),
      Some(Verdict::Recycle { reason: "age" })
    );
    assert_eq!(
      sup.check(t0 + ms(10), t0, None, || Some(101)),
      Some(Verdict::Recycle { reason: "memory" })
    );
    let unwatched = Supervision::default();
    assert!(!unwatched.watched());
    assert_eq!(
      unwatched.check(t0 + ms(1 << 30), t0, Some(t0), || panic!("read /proc")),
      None
    );
  }

  #[test]
  fn usage_of_this_process() {
    let u = usage(std::process::id() as i32).unwrap();
    assert!(u.rss_bytes > 1 << 20, "{u:?}");
    assert!(u.cpu_user_s >= 0.0);
  }
}
