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

/// What one process costs now, from /proc.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Usage {
  pub rss_bytes: u64,
  pub cpu_user_s: f64,
  pub cpu_system_s: f64,
}

pub fn usage(pid: i32) -> Option<Usage> {
  let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
  // Fields after the command name, which is in parentheses and may hold spaces.
  let rest = &stat[stat.rfind(')')? + 2..];
  let f: Vec<&str> = rest.split_whitespace().collect();
  let ticks = clock_ticks();
  let utime: f64 = f.get(11)?.parse().ok()?;
  let stime: f64 = f.get(12)?.parse().ok()?;
  let rss_pages: u64 = f.get(21)?.parse().ok()?;
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
  fn usage_of_this_process() {
    let u = usage(std::process::id() as i32).unwrap();
    assert!(u.rss_bytes > 1 << 20, "{u:?}");
    assert!(u.cpu_user_s >= 0.0);
  }
}
