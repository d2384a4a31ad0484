//! The server handles the primary holds for its workers: one per server key,
//! which workers use which key, and when a handle is released. The handles
//! themselves (and each scheduling policy's shape) are in `handles`; the
//! connection queue of the primary-accepting shapes is `dispatch`.
//!
//! Nothing here writes to a worker: methods return what to send or whom to
//! hand a connection to, and the loop does it.

use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use crate::handles::{Deliver, Grant, Policy, Query, ServerHandle, SteeringRefused};
use crate::protocol::{self, Fields};

/// The answer to a `queryServer`.
pub struct QueryReply {
  /// `{errno, key, ack, data, sockname?}`.
  pub fields: Value,
  /// The socket to send with it, and its handle type.
  pub handle: Option<(Arc<OwnedFd>, &'static str)>,
  /// The key's queue may now reach this worker.
  pub distribute: Option<String>,
  /// The kernel refused the key's steering program (reported once).
  pub steering_refused: Option<SteeringRefused>,
}

/// A queued connection and the worker to hand it to.
pub struct HandOffTo {
  pub worker: u32,
  pub conn: Arc<OwnedFd>,
  pub key: Arc<str>,
}

/// What became of a handle a worker let go of.
#[derive(Debug, PartialEq, Eq)]
pub enum Released {
  /// Still in use, nothing to do.
  Kept,
  /// Closed (nobody uses it).
  Closed,
  /// Vacant sockets wait for a taker: look again after `VACANT_LINGER`.
  Lingering,
}

/// What one sample of the queue watcher found over every handle.
#[derive(Default)]
pub struct LoadSample {
  /// Workers to write a probe to.
  pub probes: Vec<u32>,
  /// Keys whose takers changed: offer their queues again.
  pub changed: Vec<String>,
  /// Some member wants a sample again soon (`load::FAST_TICK`).
  pub busy: bool,
  /// Every sampled member's socket (`load::Watched::queues`).
  pub queues: Vec<std::os::fd::RawFd>,
}

pub struct Servers {
  pub policy: Policy,
  /// `sticky: 'ip'` for handles created from now on.
  pub sticky: bool,
  /// By key (shared with the hand-offs waiting for answers, so a hand-off
  /// costs no copy of it).
  handles: HashMap<Arc<str>, ServerHandle>,
  /// The keys each worker holds.
  held: HashMap<u32, HashSet<String>>,
  /// Primary-accepting listeners report connections by generation, so a late
  /// batch from a closed listener never lands in a new one.
  generations: HashMap<u64, Arc<str>>,
  next_generation: u64,
}

impl Servers {
  pub fn new(policy: Policy) -> Self {
    Servers {
      policy,
      sticky: false,
      handles: HashMap::new(),
      held: HashMap::new(),
      generations: HashMap::new(),
      next_generation: 0,
    }
  }

  /// `queryServer` from `worker`, answering `ack`. `deliver` makes the sink
  /// for a new handle's accepted connections, given its generation.
  pub fn query(&mut self, worker: u32, slot: u32, f: &Fields, deliver: impl FnOnce(u64) -> Deliver) -> QueryReply {
    let key = protocol::server_key(f);
    let ack = protocol::seq(f).unwrap_or(0);
    let refused = |errno: i32, key: &str| QueryReply {
      fields: json!({ "errno": errno, "key": key, "ack": ack, "data": null }),
      handle: None,
      distribute: None,
      steering_refused: None,
    };
    if !self.handles.contains_key(key.as_str()) {
      let generation = self.next_generation;
      match Query::from_fields(f).and_then(|q| ServerHandle::create(q, self.policy, deliver(generation))) {
        Ok(mut h) => {
          if self.sticky {
            h.set_sticky();
          }
          let shared: Arc<str> = Arc::from(key.as_str());
          if let Some(d) = h.dispatcher() {
            d.key = shared.clone();
          }
          self.generations.insert(generation, shared.clone());
          self.next_generation += 1;
          self.handles.insert(shared, h);
        }
        // Nothing is kept: the next worker asking tries again, as in Node.
        Err(errno) => return refused(errno, &key),
      }
    }
    let handle = self.handles.get_mut(key.as_str()).expect("just inserted");
    if handle.data.is_null() {
      if let Some(d) = f.get("data") {
        handle.data = d.clone();
      }
    }
    let data = handle.data.clone();
    let ty = handle.handle_type();
    match handle.add(worker, slot) {
      Ok(grant) => {
        // Taken only for a grant: a refused join leaves it for the next one.
        let steering_refused = handle.take_steering_refusal();
        self.held.entry(worker).or_default().insert(key.clone());
        let mut fields = json!({ "errno": 0, "key": key, "ack": ack, "data": data });
        match grant {
          Grant::Handle(fd) => QueryReply {
            fields,
            handle: Some((fd, ty)),
            distribute: None,
            steering_refused,
          },
          Grant::RoundRobin { sockname } => {
            if let Some(s) = sockname {
              fields["sockname"] = s;
            }
            QueryReply {
              fields,
              handle: None,
              distribute: Some(key),
              steering_refused,
            }
          }
        }
      }
      Err(errno) => {
        if handle.workers.is_empty() {
          self.drop_handle(&key);
        }
        refused(errno, &key)
      }
    }
  }

  /// `worker` no longer uses `key`. When it was the last one, the address is
  /// freed at once, as in Node — unless the worker crashed and will be
  /// restarted (`awaits_replacement`): then the sockets (and their queues)
  /// wait for the replacement.
  pub fn release(&mut self, worker: u32, key: &str, awaits_replacement: bool) -> Released {
    if let Some(keys) = self.held.get_mut(&worker) {
      keys.remove(key);
    }
    let Some(h) = self.handles.get_mut(key) else {
      return Released::Kept;
    };
    let unused = h.remove(worker);
    if unused && !awaits_replacement {
      self.drop_handle(key);
      return Released::Closed;
    }
    if unused || h.has_vacancies() {
      Released::Lingering
    } else {
      Released::Kept
    }
  }

  /// Releases every key of `worker`; returns those still open, and how.
  pub fn release_all(&mut self, worker: u32, awaits_replacement: bool) -> Vec<(String, Released)> {
    let keys = self.held.remove(&worker).unwrap_or_default();
    keys
      .into_iter()
      .map(|key| {
        let r = self.release(worker, &key, awaits_replacement);
        (key, r)
      })
      .filter(|(_, r)| *r != Released::Closed)
      .collect()
  }

  /// Vacant sockets of `key` waited long enough; true if its queue should be
  /// offered to the workers again.
  pub fn linger_over(&mut self, key: &str) -> bool {
    let Some(h) = self.handles.get_mut(key) else {
      return false;
    };
    h.expire_vacancies(Instant::now());
    if h.workers.is_empty() {
      self.drop_handle(key);
      false
    } else {
      true
    }
  }

  /// One sample of the queue watcher over every handle (`channel`: a
  /// worker's channel level, `load::ChannelLevel`). `None` when no handle has
  /// queues to watch.
  pub fn watch_load(&mut self, channel: &dyn Fn(u32) -> Option<crate::load::ChannelLevel>) -> Option<LoadSample> {
    let mut out: Option<LoadSample> = None;
    for (key, h) in self.handles.iter_mut() {
      if let Some(w) = h.watch_load(channel) {
        let o = out.get_or_insert_with(LoadSample::default);
        o.probes.extend(w.probes);
        o.busy |= w.busy;
        o.queues.extend(w.queues);
        if w.changed {
          o.changed.push(key.to_string());
        }
      }
    }
    if let Some(o) = out.as_mut() {
      o.probes.sort_unstable();
      o.probes.dedup();
    }
    out
  }

  /// Connections a primary-accepting listener accepted; returns their key.
  pub fn accepted(&mut self, generation: u64, conns: Vec<OwnedFd>) -> Option<Arc<str>> {
    let key = self.generations.get(&generation)?.clone();
    let d = self.handles.get_mut(&*key).and_then(ServerHandle::dispatcher)?;
    d.backlog.extend(conns.into_iter().map(Arc::new));
    Some(key)
  }

  /// Puts a connection back in its key's queue: at the front for one a dead
  /// worker never took, at the back for one a worker refused.
  pub fn requeue(&mut self, key: &str, conn: Arc<OwnedFd>, front: bool) -> bool {
    match self.handles.get_mut(key).and_then(ServerHandle::dispatcher) {
      Some(d) if front => d.backlog.push_front(conn),
      Some(d) => d.backlog.push_back(conn),
      None => return false,
    }
    true
  }

  /// The next queued connection of `key` and the worker to hand it to, the
  /// least loaded by `load` (`None`: not available).
  pub fn next_handoff(&mut self, key: &str, load: impl Fn(u32) -> Option<usize>) -> Option<HandOffTo> {
    let d = self.handles.get_mut(key).and_then(ServerHandle::dispatcher)?;
    if d.backlog.is_empty() {
      return None;
    }
    let (worker, conn) = if d.sticky {
      d.take_sticky(load)?
    } else {
      let worker = d.pick(load)?;
      (worker, d.backlog.pop_front().expect("checked non-empty"))
    };
    Some(HandOffTo {
      worker,
      conn,
      key: d.key.clone(),
    })
  }

  fn drop_handle(&mut self, key: &str) {
    if self.handles.remove(key).is_some() {
      self.generations.retain(|_, k| &**k != key);
    }
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  /// A round-robin key's queued connections go to its workers in turn, each
  /// hand-off sharing the handle's key rather than copying it.
  #[test]
  fn hand_offs_share_the_key_and_take_turns() {
    let rt = tokio::runtime::Builder::new_current_thread()
      .enable_all()
      .build()
      .unwrap();
    rt.block_on(async {
      let mut servers = Servers::new(Policy::RoundRobin);
      let f: Fields = serde_json::from_value(json!({
        "cmd": "NODE_CLUSTER", "act": "queryServer", "seq": 1,
        "address": "127.0.0.1", "port": 0, "addressType": 4,
      }))
      .unwrap();
      let nothing: Deliver = Arc::new(|_| {});
      for worker in [1, 2] {
        let reply = servers.query(worker, worker, &f, |_| nothing.clone());
        assert_eq!(reply.fields["errno"], 0);
        assert!(reply.distribute.is_some(), "a round-robin grant");
      }
      let key = protocol::server_key(&f);
      let conns = (0..3)
        .map(|_| std::fs::File::open("/dev/null").unwrap().into())
        .collect();
      assert_eq!(servers.accepted(0, conns).as_deref(), Some(key.as_str()));
      let shared = servers.generations[&0].clone();
      let mut picked = Vec::new();
      while let Some(h) = servers.next_handoff(&key, |_| Some(0)) {
        assert!(Arc::ptr_eq(&h.key, &shared), "the key is shared, not copied");
        picked.push(h.worker);
      }
      assert_eq!(picked, vec![1, 2, 1]);
      assert!(servers.next_handoff("no such key", |_| Some(0)).is_none());
    });
  }
}
