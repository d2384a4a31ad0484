//! Server handles the primary holds for its workers, one per server key, and
//! the scheduling policies that decide their shape:
//!
//! - `SCHED_REUSEPORT` (3, the default on Linux): every worker gets its own
//!   `SO_REUSEPORT` socket on the same address; the kernel spreads connections
//!   and the primary does nothing per connection.
//! - `SCHED_NONE` (1): one bound socket, handed to every worker.
//! - `SCHED_RR` (2): the primary listens and accepts, and hands connections to
//!   workers (see `dispatch`).
//!
//! UDP is never round-robin (no connections): one socket, or a reuseport group.
//! Unix-socket paths always use one socket.

use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use socket2::Socket;

use crate::dispatch::RoundRobin;
use crate::protocol::Fields;
use crate::sockets::{self, Kind};

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
  pub data: Value,
}

impl Query {
  pub fn from_fields(f: &Fields) -> Result<Query, i32> {
    let kind = f.get("addressType").and_then(Kind::from_address_type).ok_or(-libc::EINVAL)?;
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
      fd: f.get("fd").and_then(Value::as_i64).filter(|fd| *fd >= 0).map(|fd| fd as i32),
      flags: f.get("flags").and_then(Value::as_u64).unwrap_or(0) as u32,
      data: f.get("data").cloned().unwrap_or(Value::Null),
    })
  }
}

pub enum Shape {
  /// One socket for every worker.
  Shared { sock: Arc<OwnedFd>, unlink: Option<PathBuf> },
  /// A socket per worker, all in one `SO_REUSEPORT` group. `port` is the
  /// group's port (fixed by the first bind when the worker asked for 0).
  ReusePort { socks: HashMap<u32, Arc<OwnedFd>>, port: u16, spare: Option<Socket> },
  RoundRobin(RoundRobin),
}

pub struct ServerHandle {
  pub query: Query,
  pub shape: Shape,
  pub workers: HashSet<u32>,
  /// Custom server data (TLS ticket keys): the first worker's wins.
  pub data: Value,
}

/// What the worker gets back for `queryServer`.
pub enum Grant {
  /// A socket to adopt (`net.Native` or `dgram.Native`).
  Handle(Arc<OwnedFd>),
  /// Round-robin: no socket; connections will come as `newconn`.
  RoundRobin { sockname: Option<Value> },
}

impl ServerHandle {
  /// Creates the handle for the first worker asking for `key`.
  pub fn create(
    q: Query,
    policy: Policy,
    spawn_rr: impl FnOnce(Socket, Option<PathBuf>) -> Result<RoundRobin, i32>,
  ) -> Result<ServerHandle, i32> {
    let shape = if let Some(fd) = q.fd {
      Shape::Shared { sock: Arc::new(sockets::dup_fd(fd)?), unlink: None }
    } else {
      match (q.kind, policy) {
        (Kind::Pipe, p) => {
          let path = sockets::shortest_path(q.address.as_deref().unwrap_or(""));
          let sock = sockets::bind_pipe(&path)?;
          if p == Policy::RoundRobin {
            sockets::listen(&sock, 511)?;
            Shape::RoundRobin(spawn_rr(sock, Some(path))?)
          } else {
            Shape::Shared { sock: Arc::new(sock.into()), unlink: Some(path) }
          }
        }
        (k, Policy::ReusePort) => {
          // Bind the first socket now: errors (EADDRINUSE, EACCES, a bad
          // address) surface before any worker is handed a socket, and
          // `listen(0)` fixes the group's port here.
          let first = if k.is_udp() {
            sockets::bind_udp(k, q.address.as_deref(), q.port, q.flags, true)?
          } else {
            sockets::bind_tcp(k, q.address.as_deref(), q.port, q.flags, true)?
          };
          let port = sockets::local_port(&first).unwrap_or(q.port);
          Shape::ReusePort { socks: HashMap::new(), port, spare: Some(first) }
        }
        (k, Policy::None) if k.is_udp() => {
          let s = sockets::bind_udp(k, q.address.as_deref(), q.port, q.flags, false)?;
          Shape::Shared { sock: Arc::new(s.into()), unlink: None }
        }
        (k, Policy::RoundRobin) if k.is_udp() => {
          let s = sockets::bind_udp(k, q.address.as_deref(), q.port, q.flags, false)?;
          Shape::Shared { sock: Arc::new(s.into()), unlink: None }
        }
        (k, Policy::None) => {
          let s = sockets::bind_tcp(k, q.address.as_deref(), q.port, q.flags, false)?;
          Shape::Shared { sock: Arc::new(s.into()), unlink: None }
        }
        (k, Policy::RoundRobin) => {
          let s = sockets::bind_tcp(k, q.address.as_deref(), q.port, q.flags, false)?;
          // Node's round-robin server listens with the default backlog.
          sockets::listen(&s, 511)?;
          Shape::RoundRobin(spawn_rr(s, None)?)
        }
      }
    };
    Ok(ServerHandle { data: q.data.clone(), query: q, shape, workers: HashSet::new() })
  }

  /// Adds a worker and says what it gets.
  pub fn add(&mut self, worker: u32) -> Result<Grant, i32> {
    let grant = match &mut self.shape {
      Shape::Shared { sock, .. } => Grant::Handle(sock.clone()),
      Shape::ReusePort { socks, port, spare } => {
        let q = &self.query;
        let s = match spare.take() {
          Some(s) => s,
          None if q.kind.is_udp() => {
            sockets::bind_udp(q.kind, q.address.as_deref(), *port, q.flags, true)?
          }
          None => sockets::bind_tcp(q.kind, q.address.as_deref(), *port, q.flags, true)?,
        };
        let fd = Arc::new(OwnedFd::from(s));
        socks.insert(worker, fd.clone());
        Grant::Handle(fd)
      }
      Shape::RoundRobin(rr) => {
        rr.add_worker(worker);
        Grant::RoundRobin { sockname: rr.sockname.clone() }
      }
    };
    self.workers.insert(worker);
    Ok(grant)
  }

  /// Removes a worker; true when nobody uses the handle any more (the caller
  /// drops it, which closes the primary's sockets).
  pub fn remove(&mut self, worker: u32) -> bool {
    if !self.workers.remove(&worker) {
      return self.workers.is_empty();
    }
    match &mut self.shape {
      Shape::ReusePort { socks, .. } => {
        socks.remove(&worker);
      }
      Shape::RoundRobin(rr) => rr.remove_worker(worker),
      Shape::Shared { .. } => {}
    }
    self.workers.is_empty()
  }

  pub fn handle_type(&self) -> &'static str {
    self.query.kind.handle_type()
  }
}

impl Drop for ServerHandle {
  fn drop(&mut self) {
    // Like libuv closing a pipe it bound: the path goes with the socket.
    let path = match &self.shape {
      Shape::Shared { unlink: Some(p), .. } => Some(p.clone()),
      Shape::RoundRobin(rr) => rr.unlink.clone(),
      _ => None,
    };
    if let Some(p) = path {
      let _ = std::fs::remove_file(p);
    }
  }
}
