//! Server handles the primary holds for its workers, one per server key, and
//! the scheduling policies that decide their shape:
//!
//! - `SCHED_REUSEPORT` (3, the default on Linux): every worker gets its own
//!   `SO_REUSEPORT` socket on the same address; the kernel spreads connections
//!   and the primary does nothing per connection. When a worker goes away its
//!   socket stays open in the primary: new connections are steered away from
//!   it (a classic-BPF program on the group) and what is already queued there
//!   is accepted by the primary and handed to the others, so nothing is lost.
//! - `SCHED_NONE` (1): one bound socket, handed to every worker.
//! - `SCHED_RR` (2): the primary listens and accepts, and hands connections to
//!   workers (see `dispatch`).
//!
//! UDP is never round-robin (no connections) and always one shared socket.
//! Unix-socket paths always use one socket.

use std::collections::HashSet;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use socket2::Socket;

use crate::dispatch::{Acceptor, Dispatcher, RoundRobin};
use crate::load::{self, Watch, Watched};
use crate::protocol::Fields;
use crate::sockets::{self, Kind};
use crate::steering;

/// The backlog the primary listens with before a worker sets its own (Node's
/// default for servers, also used when `listen()` got no usable backlog).
const DEFAULT_BACKLOG: i32 = 511;

/// How long a departed worker's socket is kept (steered away from, drained)
/// for a replacement to take over before it is closed.
pub const VACANT_LINGER: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
  None = 1,
  RoundRobin = 2,
  ReusePort = 3,
}

impl Policy {
  pub fn from_u32(v: u32) -> Option<Policy> {
    match v {
      1 => Some(Policy::None),
      2 => Some(Policy::RoundRobin),
      3 => Some(Policy::ReusePort),
      _ => None,
    }
  }
}

/// What a worker asked for in `queryServer`.
#[derive(Clone, Debug)]
pub struct Query {
  pub kind: Kind,
  pub address: Option<String>,
  pub port: u16,
  pub fd: Option<i32>,
  pub flags: u32,
  /// What `listen()` in a Node primary would pass to listen(2) for the
  /// worker's `backlog`; used for the socket the primary itself listens on.
  pub backlog: i32,
  /// `listen({ path, readableAll, writableAll })`.
  pub readable_all: bool,
  pub writable_all: bool,
  pub data: Value,
}

impl Query {
  pub fn from_fields(f: &Fields) -> Result<Query, i32> {
    let kind = f
      .get("addressType")
      .and_then(Kind::from_address_type)
      .ok_or(-libc::EINVAL)?;
    let port = match f.get("port").and_then(Value::as_i64) {
      Some(p) if (0..=65535).contains(&p) => p as u16,
      Some(_) if kind == Kind::Pipe => 0,
      None => 0,
      Some(_) => return Err(-libc::EINVAL),
    };
    Ok(Query {
      kind,
      address: f.get("address").and_then(Value::as_str).map(str::to_owned),
      port,
      fd: f
        .get("fd")
        .and_then(Value::as_i64)
        .filter(|fd| *fd >= 0)
        .map(|fd| fd as i32),
      flags: f.get("flags").and_then(Value::as_u64).unwrap_or(0) as u32,
      backlog: listen_backlog(f.get("backlog")),
      // Node's `listen()` honours these only when exactly `true`.
      readable_all: f.get("readableAll") == Some(&Value::Bool(true)),
      writable_all: f.get("writableAll") == Some(&Value::Bool(true)),
      data: f.get("data").cloned().unwrap_or(Value::Null),
    })
  }

  fn bind(&self, port: u16, reuseport: bool) -> Result<Socket, i32> {
    if self.kind.is_udp() {
      sockets::bind_udp(self.kind, self.address.as_deref(), port, self.flags, reuseport)
    } else {
      sockets::bind_tcp(self.kind, self.address.as_deref(), port, self.flags, reuseport)
    }
  }
}

/// The backlog a Node primary listens with for a worker's `backlog` (sent
/// as given to `listen()`): `listen(backlog || 511)`, where the binding
/// converts the value with JavaScript's ToInt32. The kernel caps it at
/// `net.core.somaxconn` (negative values included).
fn listen_backlog(v: Option<&Value>) -> i32 {
  let n = match v {
    None | Some(Value::Null) | Some(Value::Bool(false)) => return DEFAULT_BACKLOG,
    Some(Value::Bool(true)) => 1.0,
    Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
    Some(Value::String(s)) if s.is_empty() => return DEFAULT_BACKLOG,
    // Any other string is truthy, even one that converts to 0.
    Some(Value::String(s)) => return js_to_int32(js_string_to_number(s)),
    // Arrays and objects are truthy; ToNumber gives NaN (0) for all but
    // one-element arrays, which are not worth a special case.
    Some(_) => return 0,
  };
  if n == 0.0 || n.is_nan() {
    return DEFAULT_BACKLOG;
  }
  js_to_int32(n)
}

/// JavaScript's ToInt32.
fn js_to_int32(n: f64) -> i32 {
  if !n.is_finite() {
    return 0;
  }
  n.trunc().rem_euclid(4_294_967_296.0) as u32 as i32
}

/// JavaScript's ToNumber for strings, as far as ToInt32 can tell: surrounding
/// whitespace ignored, "" is 0, decimal and 0x/0o/0b literals; anything else
/// is NaN (like `Infinity`, which ToInt32 also turns into 0).
fn js_string_to_number(s: &str) -> f64 {
  let t = s.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
  if t.is_empty() {
    return 0.0;
  }
  let radix = match t.get(..2) {
    Some("0x" | "0X") => 16,
    Some("0o" | "0O") => 8,
    Some("0b" | "0B") => 2,
    _ => 10,
  };
  if radix != 10 {
    let digits = &t[2..];
    if digits.is_empty() {
      return f64::NAN;
    }
    return digits
      .chars()
      .try_fold(0.0, |acc, c| c.to_digit(radix).map(|d| acc * radix as f64 + d as f64))
      .unwrap_or(f64::NAN);
  }
  // Rust also parses "inf" and "nan", JavaScript does not.
  let decimal = |b: u8| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-');
  if !t.bytes().all(decimal) {
    return f64::NAN;
  }
  t.parse().unwrap_or(f64::NAN)
}

/// Where accepted connections go: the core's queue for this handle.
pub type Deliver = Arc<dyn Fn(Vec<OwnedFd>) + Send + Sync>;

/// One member of a reuseport group.
pub struct Slot {
  pub sock: Arc<OwnedFd>,
  /// Its worker (whose supervised slot, what `sticky: 'ip'` maps clients
  /// to, is the dispatcher's `slots`).
  pub owner: Option<u32>,
  /// Accepting what is queued on a vacant (or stalled) TCP slot.
  pub(crate) drain: Option<Acceptor>,
  vacated: Option<Instant>,
  /// Whether its worker keeps up (see `load`).
  pub watch: Watch,
}

impl Slot {
  /// Accepts what the member's queue holds, and whatever still reaches it,
  /// on a duplicate of its socket, for as long as the acceptor lives: the
  /// drain of a departed worker's member and of a stalled one alike.
  pub(crate) fn start_drain(&self, deliver: Deliver) -> Option<Acceptor> {
    let dup = self.sock.as_fd().try_clone_to_owned().ok()?;
    Acceptor::start(Socket::from(dup), move |c| deliver(c)).ok()
  }
}

/// A reuseport group. `slots` mirrors the kernel's order of the group (TCP
/// sockets join when they listen, which the primary does, in this order; a
/// closed member is replaced by the last one), so a slot's position is the
/// index the steering program answers with.
pub struct ReusePortGroup {
  pub port: u16,
  pub slots: Vec<Slot>,
  /// Connections drained from vacant slots, waiting for a worker. Its
  /// `sticky` is the group's `sticky: 'ip'`: the steering program and the
  /// hand-off of drained connections both go by client address.
  pub dispatcher: Dispatcher,
  /// False once attaching the steering program failed (old kernel, or a
  /// seccomp filter): then vacant slots get some connections and drain them.
  steering: bool,
  /// The errno of that failure, until `take_steering_refusal` reports it.
  refused: Option<i32>,
}

/// One scheduling policy's shape of a server handle, behind the interface
/// every policy shares (as Node's `shared_handle.js` and
/// `round_robin_handle.js` do): what a joining worker gets, what a leaving
/// one leaves behind.
pub trait Shape: Send {
  /// `worker` (of supervised `slot`) joins; says what it gets.
  fn add(&mut self, worker: u32, slot: u32, q: &Query) -> Result<Grant, i32>;
  /// `worker` leaves; `deliver` takes connections it left queued, if any.
  fn remove(&mut self, worker: u32, deliver: &Deliver);
  /// Where connections the primary accepted wait for workers.
  fn dispatcher(&mut self) -> Option<&mut Dispatcher> {
    None
  }
  /// Sockets a departed worker left, waiting for a taker.
  fn has_vacancies(&self) -> bool {
    false
  }
  /// Closes vacancies nobody took within `VACANT_LINGER`.
  fn expire(&mut self, _now: Instant) {}
  /// One sample of the queue watcher (`load`); `None` when the shape has
  /// no per-worker queues to watch.
  fn watch_load(
    &mut self,
    _channel: &dyn Fn(u32) -> Option<crate::load::ChannelLevel>,
    _deliver: &Deliver,
  ) -> Option<Watched> {
    None
  }
  /// `sticky: 'ip'`: connections go by client address (see `sticky`).
  /// Shapes that do not distribute connections have nothing to do.
  fn set_sticky(&mut self) {}
  /// The kernel refused the steering program (once per handle, then no
  /// program is attached again): its errno, and whether it was sticky's.
  fn take_steering_refusal(&mut self) -> Option<SteeringRefused> {
    None
  }
}

/// The kernel refused a reuseport group's steering program: the group runs
/// on the kernel's own reuseport hash from then on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SteeringRefused {
  pub errno: i32,
  pub sticky: bool,
  /// The group's port.
  pub port: u16,
}

/// Removes a Unix socket's path when dropped, as libuv does when it closes a
/// pipe it bound.
pub struct Unlink(pub PathBuf);

impl Drop for Unlink {
  fn drop(&mut self) {
    let _ = std::fs::remove_file(&self.0);
  }
}

/// `SCHED_NONE`, UDP, pipes and `listen({ fd })`: one socket for every worker.
pub struct Shared {
  /// First, so the path goes before the socket, as it did with libuv.
  _unlink: Option<Unlink>,
  sock: Arc<OwnedFd>,
}

impl Shape for Shared {
  fn add(&mut self, _worker: u32, _slot: u32, _q: &Query) -> Result<Grant, i32> {
    Ok(Grant::Handle(self.sock.clone()))
  }

  fn remove(&mut self, _worker: u32, _deliver: &Deliver) {}
}

impl Shape for RoundRobin {
  fn add(&mut self, worker: u32, slot: u32, _q: &Query) -> Result<Grant, i32> {
    self.dispatcher.add_worker(worker);
    self.dispatcher.slots.insert(worker, slot);
    Ok(Grant::RoundRobin {
      sockname: self.sockname.clone(),
    })
  }

  fn remove(&mut self, worker: u32, _deliver: &Deliver) {
    self.dispatcher.remove_worker(worker);
  }

  fn dispatcher(&mut self) -> Option<&mut Dispatcher> {
    Some(&mut self.dispatcher)
  }

  fn set_sticky(&mut self) {
    self.dispatcher.sticky = true;
  }
}

impl Shape for ReusePortGroup {
  fn add(&mut self, worker: u32, slot: u32, q: &Query) -> Result<Grant, i32> {
    self.join(worker, slot, q).map(Grant::Handle)
  }

  fn set_sticky(&mut self) {
    self.dispatcher.sticky = true;
    self.steer();
  }

  fn take_steering_refusal(&mut self) -> Option<SteeringRefused> {
    let errno = self.refused.take()?;
    Some(SteeringRefused {
      errno,
      sticky: self.dispatcher.sticky,
      port: self.port,
    })
  }

  fn remove(&mut self, worker: u32, deliver: &Deliver) {
    self.vacate(worker, deliver);
  }

  fn dispatcher(&mut self) -> Option<&mut Dispatcher> {
    Some(&mut self.dispatcher)
  }

  fn has_vacancies(&self) -> bool {
    self.slots.iter().any(|s| s.owner.is_none())
  }

  fn expire(&mut self, now: Instant) {
    self.expire_vacant(now);
  }

  fn watch_load(
    &mut self,
    channel: &dyn Fn(u32) -> Option<crate::load::ChannelLevel>,
    deliver: &Deliver,
  ) -> Option<Watched> {
    // Sticky groups keep a stalled worker's clients with it (affinity wins
    // over load), so there is nothing to watch.
    if self.dispatcher.sticky {
      return None;
    }
    let watched = crate::load::watch_group(self, channel, deliver);
    if watched.changed {
      self.steer();
    }
    Some(watched)
  }
}

pub struct ServerHandle {
  pub query: Query,
  shape: Box<dyn Shape>,
  pub workers: HashSet<u32>,
  /// Custom server data (TLS ticket keys): the first worker's wins.
  pub data: Value,
  deliver: Deliver,
}

/// What the worker gets back for `queryServer`.
pub enum Grant {
  /// A socket to adopt (`net.Native` or `dgram.Native`).
  Handle(Arc<OwnedFd>),
  /// Round-robin: no socket; connections will come as `newconn`.
  RoundRobin { sockname: Option<Value> },
}

impl ServerHandle {
  /// Creates the handle for the first worker asking for a key. Binding errors
  /// come back as negative errno values.
  pub fn create(q: Query, policy: Policy, deliver: Deliver) -> Result<ServerHandle, i32> {
    let shape: Box<dyn Shape> = if let Some(fd) = q.fd {
      // `listen({ fd })`: the primary's own fd, made non-blocking as libuv
      // would on opening it.
      let dup = sockets::dup_fd(fd)?;
      let _ = crate::spawn::set_nonblocking(dup.as_raw_fd(), true);
      Box::new(Shared {
        sock: Arc::new(dup),
        _unlink: None,
      })
    } else {
      match (q.kind, policy) {
        (Kind::Pipe, p) => {
          let path = sockets::shortest_path(q.address.as_deref().unwrap_or(""));
          let sock = sockets::bind_pipe(&path)?;
          // Whoever listens, the primary owns the file: it sets the modes
          // (as Node's primary does when it listens under SCHED_RR).
          let listened = match p {
            Policy::RoundRobin => sockets::listen(&sock, q.backlog),
            _ => Ok(()),
          };
          if let Err(e) = listened.and_then(|_| sockets::chmod_pipe(&path, q.readable_all, q.writable_all)) {
            let _ = std::fs::remove_file(&path);
            return Err(e);
          }
          if p == Policy::RoundRobin {
            let d = deliver.clone();
            Box::new(RoundRobin::start(sock, Some(Unlink(path)), move |c| d(c))?)
          } else {
            Box::new(Shared {
              sock: Arc::new(sock.into()),
              _unlink: Some(Unlink(path)),
            })
          }
        }
        // UDP stays one shared socket, as in Node: a reuseport group would
        // pin each sender to one worker (the kernel hashes by source).
        (k, Policy::ReusePort) if !k.is_udp() => {
          // A reuseport group would silently share the port with any other
          // process that also asks for SO_REUSEPORT (another primary, say);
          // a plain bind first keeps EADDRINUSE honest.
          if q.port != 0 {
            drop(q.bind(q.port, false)?);
          }
          // Bind the first member now: errors (EADDRINUSE, EACCES, a bad
          // address) surface before any worker is handed a socket, and
          // `listen(0)` fixes the group's port here.
          let first = q.bind(q.port, true)?;
          sockets::listen(&first, DEFAULT_BACKLOG)?;
          let port = sockets::local_port(&first).unwrap_or(q.port);
          Box::new(ReusePortGroup {
            port,
            slots: vec![Slot {
              sock: Arc::new(first.into()),
              owner: None,
              drain: None,
              vacated: None,
              watch: Watch::default(),
            }],
            dispatcher: Dispatcher::default(),
            steering: true,
            refused: None,
          })
        }
        (k, Policy::RoundRobin) if !k.is_udp() => {
          let s = q.bind(q.port, false)?;
          // The worker never listens on this socket: its backlog is ours.
          sockets::listen(&s, q.backlog)?;
          let d = deliver.clone();
          Box::new(RoundRobin::start(s, None, move |c| d(c))?)
        }
        // SCHED_NONE, and UDP under the other policies.
        _ => Box::new(Shared {
          sock: Arc::new(q.bind(q.port, false)?.into()),
          _unlink: None,
        }),
      }
    };
    Ok(ServerHandle {
      data: q.data.clone(),
      query: q,
      shape,
      workers: HashSet::new(),
      deliver,
    })
  }

  /// Adds a worker (of supervised `slot`) and says what it gets.
  pub fn add(&mut self, worker: u32, slot: u32) -> Result<Grant, i32> {
    let grant = self.shape.add(worker, slot, &self.query)?;
    self.workers.insert(worker);
    Ok(grant)
  }

  /// Removes a worker; true when nobody uses the handle any more.
  pub fn remove(&mut self, worker: u32) -> bool {
    if self.workers.remove(&worker) {
      self.shape.remove(worker, &self.deliver);
    }
    self.workers.is_empty()
  }

  /// `sticky: 'ip'` (before any worker joins).
  pub fn set_sticky(&mut self) {
    self.shape.set_sticky();
  }

  /// A refusal of the steering program not reported yet.
  pub fn take_steering_refusal(&mut self) -> Option<SteeringRefused> {
    self.shape.take_steering_refusal()
  }

  /// Where this handle's primary-accepted connections wait for workers.
  pub fn dispatcher(&mut self) -> Option<&mut Dispatcher> {
    self.shape.dispatcher()
  }

  /// One sample of the queue watcher; `None`: nothing to watch here.
  pub fn watch_load(&mut self, channel: &dyn Fn(u32) -> Option<crate::load::ChannelLevel>) -> Option<Watched> {
    self.shape.watch_load(channel, &self.deliver)
  }

  /// Closes vacant reuseport members nobody took over in time.
  pub fn expire_vacancies(&mut self, now: Instant) {
    self.shape.expire(now);
  }

  pub fn has_vacancies(&self) -> bool {
    self.shape.has_vacancies()
  }

  pub fn handle_type(&self) -> &'static str {
    self.query.kind.handle_type()
  }
}

impl ReusePortGroup {
  fn join(&mut self, worker: u32, supervised: u32, q: &Query) -> Result<Arc<OwnedFd>, i32> {
    // Take over a vacant member first: its queue stays with it, so whatever
    // the drain has not accepted yet is the replacement's to serve.
    let idx = match self.slots.iter().position(|s| s.owner.is_none()) {
      Some(i) => i,
      None => {
        let s = q.bind(self.port, true)?;
        sockets::listen(&s, DEFAULT_BACKLOG)?;
        self.slots.push(Slot {
          sock: Arc::new(s.into()),
          owner: None,
          drain: None,
          vacated: None,
          watch: Watch::default(),
        });
        self.slots.len() - 1
      }
    };
    let slot = &mut self.slots[idx];
    slot.owner = Some(worker);
    slot.drain = None;
    slot.vacated = None;
    slot.watch = Watch::default();
    let sock = slot.sock.clone();
    self.dispatcher.slots.insert(worker, supervised);
    self.steer();
    Ok(sock)
  }

  fn vacate(&mut self, worker: u32, deliver: &Deliver) {
    self.dispatcher.slots.remove(&worker);
    let Some(idx) = self.slots.iter().position(|s| s.owner == Some(worker)) else {
      return;
    };
    let slot = &mut self.slots[idx];
    slot.owner = None;
    slot.vacated = Some(Instant::now());
    slot.watch = Watch::default();
    slot.drain = slot.start_drain(deliver.clone());
    self.steer();
  }

  fn expire_vacant(&mut self, now: Instant) {
    for i in (0..self.slots.len()).rev() {
      let s = &self.slots[i];
      if s.owner.is_none() && s.vacated.is_some_and(|t| now.duration_since(t) >= VACANT_LINGER) {
        self.close_slot(i);
      }
    }
  }

  /// Leaves the group: accept what is still queued, then shut the socket
  /// down so the kernel detaches it now (not when the last copy of the fd
  /// closes), and mirror the kernel's reordering.
  fn close_slot(&mut self, idx: usize) {
    let slot = self.slots.swap_remove(idx);
    drop(slot.drain);
    let fd = slot.sock.as_raw_fd();
    if slot.owner.is_none() {
      self
        .dispatcher
        .backlog
        .extend(sockets::accept_all(fd).into_iter().map(Arc::new));
    }
    // SAFETY: shutdown on an fd we hold; detaches a listener from its group.
    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
    self.steer();
  }

  /// The members that take connections, by index: every member with a
  /// worker when sticky (affinity wins over load), else those not stalled
  /// (`load::members`).
  fn takers(&self) -> Vec<u32> {
    let owned = self.slots.iter().enumerate().filter(|(_, s)| s.owner.is_some());
    if self.dispatcher.sticky {
      return owned.map(|(i, _)| i as u32).collect();
    }
    let at = load::clock();
    load::members(owned.map(|(i, s)| (i as u32, s.watch.stalled_for(at))))
  }

  /// Points the kernel (the steering program) and the dispatcher (the
  /// connections the primary holds) at the same members: called whenever
  /// an owner or a stall changes.
  fn steer(&mut self) {
    let takers = self.takers();
    self.dispatcher.workers = (takers.iter()).filter_map(|&i| self.slots[i as usize].owner).collect();
    if !self.steering || self.slots.is_empty() {
      return;
    }
    let fd = self.slots[0].sock.as_raw_fd();
    let attached = if self.dispatcher.sticky {
      // Takers have owners, and every owner its supervised slot (`join`).
      let supervised = |i: u32| {
        self.slots[i as usize]
          .owner
          .and_then(|w| self.dispatcher.slots.get(&w).copied())
      };
      let members: Vec<(u32, u32)> = (takers.iter()).filter_map(|&i| Some((i, supervised(i)?))).collect();
      sockets::attach_reuseport_cbpf(fd, &mut steering::sticky_program(&members))
    } else {
      sockets::steer_reuseport(fd, &takers)
    };
    if let Err(e) = attached {
      self.steering = false;
      self.refused = Some(e.raw_os_error().unwrap_or(libc::EINVAL));
    }
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use serde_json::json;

  fn loopback(policy: Policy) -> ServerHandle {
    let f: Fields = serde_json::from_value(json!({"address": "127.0.0.1", "port": 0, "addressType": 4})).unwrap();
    let deliver: Deliver = Arc::new(|_| {});
    ServerHandle::create(Query::from_fields(&f).unwrap(), policy, deliver).unwrap()
  }

  fn handle_fd(g: Grant) -> i32 {
    match g {
      Grant::Handle(fd) => fd.as_raw_fd(),
      Grant::RoundRobin { .. } => panic!("no socket granted"),
    }
  }

  /// Every policy answers the same add/remove; what differs is the grant.
  #[test]
  fn policies_share_one_interface() {
    let rt = tokio::runtime::Builder::new_current_thread()
      .enable_all()
      .build()
      .unwrap();
    rt.block_on(async {
      let mut none = loopback(Policy::None);
      let a = handle_fd(none.add(1, 1).unwrap());
      assert_eq!(handle_fd(none.add(2, 2).unwrap()), a, "one socket for all");
      assert!(!none.remove(1));
      assert!(none.remove(2), "unused once the last worker leaves");
      assert!(none.dispatcher().is_none());

      let mut rr = loopback(Policy::RoundRobin);
      assert!(matches!(rr.add(1, 1), Ok(Grant::RoundRobin { sockname: Some(_) })));
      assert_eq!(rr.dispatcher().unwrap().workers, vec![1]);
      assert!(rr.remove(1));
      assert!(rr.dispatcher().unwrap().workers.is_empty());

      let mut rp = loopback(Policy::ReusePort);
      let first = handle_fd(rp.add(1, 1).unwrap());
      assert_ne!(handle_fd(rp.add(2, 2).unwrap()), first, "a socket per worker");
      assert!(!rp.has_vacancies());
      assert!(!rp.remove(1));
      assert!(rp.has_vacancies(), "the departed worker's socket waits for a taker");
      assert_eq!(handle_fd(rp.add(3, 3).unwrap()), first, "taken over, queue and all");
      assert!(!rp.has_vacancies());
    });
  }

  /// What `listen(backlog || 511)` passes to listen(2) in a Node primary,
  /// checked against Node for each value.
  #[test]
  fn backlog_as_node_converts_it() {
    let b = |v: Value| listen_backlog(Some(&v));
    assert_eq!(listen_backlog(None), 511);
    assert_eq!(b(Value::Null), 511);
    assert_eq!(b(json!(3)), 3);
    assert_eq!(b(json!(0)), 511);
    assert_eq!(b(json!(false)), 511);
    assert_eq!(b(json!(true)), 1);
    assert_eq!(b(json!("")), 511);
    assert_eq!(b(json!(2.9)), 2);
    assert_eq!(b(json!(0.5)), 0);
    assert_eq!(b(json!(-1)), -1);
    assert_eq!(b(json!(4294967298.0)), 2);
    assert_eq!(b(json!(2147483648.0)), i32::MIN);
    assert_eq!(b(json!("5")), 5);
    assert_eq!(b(json!(" 7\n")), 7);
    assert_eq!(b(json!("0x10")), 16);
    assert_eq!(b(json!("0b11")), 3);
    assert_eq!(b(json!("1e2")), 100);
    assert_eq!(b(json!("-4")), -4);
    assert_eq!(b(json!(" ")), 0);
    assert_eq!(b(json!("abc")), 0);
    assert_eq!(b(json!("inf")), 0);
    assert_eq!(b(json!("Infinity")), 0);
    assert_eq!(b(json!("0x")), 0);
    assert_eq!(b(json!({})), 0);
    assert_eq!(b(json!("-0x5")), 0);
    assert_eq!(b(json!("1_0")), 0);
    assert_eq!(b(json!(".5e1")), 5);
    assert_eq!(b(json!("5.")), 5);
    assert_eq!(b(json!(" +3 ")), 3);
    assert_eq!(b(json!("\u{a0}5")), 5);
    assert_eq!(b(json!("1e")), 0);
  }
}
