//! The Prometheus text exposition format (0.0.4) of a `Snapshot`: one
//! `# HELP` and `# TYPE` per family, counters ending in `_total`, base units
//! (bytes, seconds). Label values are numbers, so nothing needs escaping.

use std::collections::HashMap;
use std::fmt::Write;

use super::ready;
use super::snapshot::{SlotStatus, Snapshot, WorkerView};
use crate::supervisor::Usage;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Everything one scrape reports.
pub struct Figures<'a> {
  pub snapshot: &'a Snapshot,
  /// Worker usage by pid (workers whose /proc entry is gone are missing).
  pub usage: &'a HashMap<i32, Usage>,
  pub primary: Option<Usage>,
  pub reloads: u64,
  /// The load-aware default's counters (`load::counters`): stalls seen,
  /// connections taken from stalled queues.
  pub stalls: (u64, u64),
}

struct Out(String);

impl Out {
  fn family(&mut self, name: &str, kind: &str, help: &str) {
    let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
  }

  fn sample(&mut self, name: &str, labels: &[(&str, String)], value: f64) {
    self.0.push_str(name);
    if !labels.is_empty() {
      self.0.push('{');
      for (i, (k, v)) in labels.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(self.0, "{sep}{k}=\"{v}\"");
      }
      self.0.push('}');
    }
    let _ = writeln!(self.0, " {value}");
  }

  /// One family with a sample per worker that has a value.
  fn per_worker(&mut self, name: &str, kind: &str, help: &str, rows: &[(&WorkerView, f64)]) {
    self.family(name, kind, help);
    for (w, v) in rows {
      self.sample(name, &worker_labels(w), *v);
    }
  }
}

fn worker_labels(w: &WorkerView) -> Vec<(&'static str, String)> {
  vec![
    ("slot", w.slot.to_string()),
    ("id", w.id.to_string()),
    ("pid", w.pid.to_string()),
  ]
}

fn bool_value(b: bool) -> f64 {
  if b {
    1.0
  } else {
    0.0
  }
}

pub fn render(f: &Figures) -> String {
  let s = f.snapshot;
  let mut out = Out(String::with_capacity(4096));

  out.family(
    "rcluster_workers",
    "gauge",
    "Worker processes alive (starting, serving, leaving or standing by for a reload).",
  );
  out.sample("rcluster_workers", &[], s.workers.len() as f64);
  out.family(
    "rcluster_ready",
    "gauge",
    "1 when every slot has a worker listening on the addresses its slot serves (as /readyz).",
  );
  out.sample("rcluster_ready", &[], bool_value(ready::verdict(s).is_ok()));

  let up: Vec<_> = s.workers.iter().map(|w| (w, bool_value(w.up))).collect();
  out.per_worker(
    "rcluster_worker_up",
    "gauge",
    "1 while the worker is connected and listening on its slot's addresses.",
    &up,
  );
  let start: Vec<_> = s.workers.iter().map(|w| (w, w.start_time)).collect();
  out.per_worker(
    "rcluster_worker_start_time_seconds",
    "gauge",
    "When the worker was started, in seconds since the Unix epoch.",
    &start,
  );
  let rss: Vec<_> = s
    .workers
    .iter()
    .filter_map(|w| f.usage.get(&w.pid).map(|u| (w, u.rss_bytes as f64)))
    .collect();
  out.per_worker(
    "rcluster_worker_resident_memory_bytes",
    "gauge",
    "Resident memory of the worker process in bytes.",
    &rss,
  );
  out.family(
    "rcluster_worker_cpu_seconds_total",
    "counter",
    "CPU time the worker process used, in seconds, by mode.",
  );
  for w in &s.workers {
    if let Some(u) = f.usage.get(&w.pid) {
      for (mode, v) in [("user", u.cpu_user_s), ("system", u.cpu_system_s)] {
        let mut labels = worker_labels(w);
        labels.push(("mode", mode.to_string()));
        out.sample("rcluster_worker_cpu_seconds_total", &labels, v);
      }
    }
  }
  let lag: Vec<_> = s
    .workers
    .iter()
    .filter_map(|w| w.heartbeat_lag.map(|l| (w, l.as_secs_f64())))
    .collect();
  out.per_worker(
    "rcluster_worker_heartbeat_lag_seconds",
    "gauge",
    "Event-loop delay the worker measured at its last heartbeat (workers send heartbeats with hangTimeout).",
    &lag,
  );
  let handoffs: Vec<_> = s.workers.iter().map(|w| (w, w.handoffs as f64)).collect();
  out.per_worker(
    "rcluster_worker_connections_handed_off_total",
    "counter",
    "Connections the primary handed to the worker (round-robin, drained queues).",
    &handoffs,
  );

  out.family(
    "rcluster_slot_ready",
    "gauge",
    "1 when the slot's worker listens on every address the slot serves.",
  );
  for slot in &s.slots {
    let ready = matches!(slot.status, SlotStatus::Serving { .. });
    out.sample(
      "rcluster_slot_ready",
      &[("slot", slot.slot.to_string())],
      bool_value(ready),
    );
  }
  out.family(
    "rcluster_slot_restarts_total",
    "counter",
    "Workers the core started to replace a crashed or hung worker of the slot.",
  );
  for slot in &s.slots {
    let labels = [("slot", slot.slot.to_string())];
    out.sample("rcluster_slot_restarts_total", &labels, slot.restarts as f64);
  }

  // A family without samples (no /proc) is still valid exposition.
  out.family(
    "rcluster_primary_resident_memory_bytes",
    "gauge",
    "Resident memory of the primary process in bytes.",
  );
  if let Some(u) = &f.primary {
    out.sample("rcluster_primary_resident_memory_bytes", &[], u.rss_bytes as f64);
  }
  out.family(
    "rcluster_primary_cpu_seconds_total",
    "counter",
    "CPU time the primary process used, in seconds, by mode.",
  );
  if let Some(u) = &f.primary {
    out.sample(
      "rcluster_primary_cpu_seconds_total",
      &[("mode", "user".into())],
      u.cpu_user_s,
    );
    out.sample(
      "rcluster_primary_cpu_seconds_total",
      &[("mode", "system".into())],
      u.cpu_system_s,
    );
  }

  out.family(
    "rcluster_crash_loops_total",
    "counter",
    "Slots given up after crashing more often than the restart policy allows.",
  );
  out.sample("rcluster_crash_loops_total", &[], s.crash_loops as f64);
  out.family(
    "rcluster_reloads_total",
    "counter",
    "Rolling reloads started (cluster.reload(), SIGHUP with signals: true).",
  );
  out.sample("rcluster_reloads_total", &[], f.reloads as f64);
  out.family(
    "rcluster_stalls_total",
    "counter",
    "Times a worker was seen stalled: connections waiting in its queue while it did not read its channel.",
  );
  out.sample("rcluster_stalls_total", &[], f.stalls.0 as f64);
  out.family(
    "rcluster_stalled_connections_taken_total",
    "counter",
    "Connections the primary took from stalled workers' queues and handed to healthy ones.",
  );
  out.sample("rcluster_stalled_connections_taken_total", &[], f.stalls.1 as f64);
  out.0
}

#[cfg(test)]
mod tests {
  use super::super::snapshot::SlotState;
  use super::*;
  use std::time::Duration;

  fn worker(id: u32, slot: u32, lag: Option<Duration>) -> WorkerView {
    WorkerView {
      id,
      pid: 100 + id as i32,
      slot,
      start_time: 1_700_000_000.5,
      up: true,
      heartbeat_lag: lag,
      handoffs: 7,
    }
  }

  #[test]
  fn renders_families_with_help_type_and_labels() {
    let snapshot = Snapshot {
      workers: vec![worker(1, 0, Some(Duration::from_millis(12))), worker(2, 1, None)],
      slots: vec![
        SlotState {
          slot: 0,
          restarts: 3,
          status: SlotStatus::Serving { id: 1 },
        },
        SlotState {
          slot: 1,
          restarts: 0,
          status: SlotStatus::Restarting,
        },
      ],
      crash_loops: 1,
    };
    let usage = HashMap::from([(
      101,
      Usage {
        rss_bytes: 4096,
        cpu_user_s: 0.25,
        cpu_system_s: 0.5,
      },
    )]);
    let text = render(&Figures {
      snapshot: &snapshot,
      usage: &usage,
      primary: None,
      reloads: 2,
      stalls: (3, 7),
    });
    for line in [
      "# TYPE rcluster_workers gauge\nrcluster_workers 2\n",
      "rcluster_ready 0\n",
      "rcluster_worker_up{slot=\"1\",id=\"2\",pid=\"102\"} 1\n",
      "rcluster_worker_start_time_seconds{slot=\"0\",id=\"1\",pid=\"101\"} 1700000000.5\n",
      "rcluster_worker_resident_memory_bytes{slot=\"0\",id=\"1\",pid=\"101\"} 4096\n",
      "rcluster_worker_cpu_seconds_total{slot=\"0\",id=\"1\",pid=\"101\",mode=\"system\"} 0.5\n",
      "rcluster_worker_heartbeat_lag_seconds{slot=\"0\",id=\"1\",pid=\"101\"} 0.012\n",
      "rcluster_worker_connections_handed_off_total{slot=\"1\",id=\"2\",pid=\"102\"} 7\n",
      "rcluster_slot_ready{slot=\"1\"} 0\n",
      "rcluster_slot_restarts_total{slot=\"0\"} 3\n",
      "# TYPE rcluster_primary_cpu_seconds_total counter\n",
      "rcluster_crash_loops_total 1\n",
      "rcluster_reloads_total 2\n",
      "# TYPE rcluster_stalls_total counter\nrcluster_stalls_total 3\n",
      "rcluster_stalled_connections_taken_total 7\n",
    ] {
      assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    // Worker 2 has no /proc figures and sends no heartbeats: no samples.
    assert!(!text.contains("rcluster_worker_resident_memory_bytes{slot=\"1\""));
    assert!(!text.contains("rcluster_worker_heartbeat_lag_seconds{slot=\"1\""));
    // Every family has HELP then TYPE, once.
    let helps = text.lines().filter(|l| l.starts_with("# HELP")).count();
    let types = text.lines().filter(|l| l.starts_with("# TYPE")).count();
    assert_eq!(helps, types);
    assert!(text.ends_with('\n'));
  }
}
