//! The metrics and health endpoint, served by the core's runtime so it
//! answers while the primary's JavaScript is busy:
//!
//! - `snapshot`   — the plain data the loop copies out for one request
//! - `ready`      — the `/readyz` verdict
//! - `exposition` — the Prometheus text format
//!
//! Each request asks the loop for a `Snapshot` (one message, answered in a
//! pass over the workers), then reads /proc and renders on a blocking-pool
//! thread, so neither the loop nor the JS thread does per-request work.

mod admission;
pub mod exposition;
mod lookup;
pub mod ready;
pub mod snapshot;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinHandle;

use self::admission::Waiting;
use self::snapshot::{Counters, Snapshot};
use crate::http::{self, BadRequest, Response};
use crate::sockets;

/// Asks the loop for a snapshot; false when the loop is gone.
pub type Ask = Arc<dyn Fn(oneshot::Sender<Snapshot>) -> bool + Send + Sync>;

/// Connections served at once. A newcomer beyond it evicts the oldest one
/// still sending its request head (`admission`), or is closed unanswered.
const MAX_CONNECTIONS: usize = 64;
/// How long a newcomer waits for the slot of the connection it evicted.
const EVICT_WAIT: Duration = Duration::from_millis(100);
/// A loop that does not answer within this is reported unhealthy.
const LOOP_TIMEOUT: Duration = Duration::from_secs(2);

/// A running endpoint (its task binds, then accepts); dropping it closes
/// the listening socket once the task is cancelled.
pub struct Endpoint {
  task: Option<JoinHandle<()>>,
}

impl Endpoint {
  /// Cancels the task and waits until its socket is closed.
  async fn closed(mut self) {
    if let Some(task) = self.task.take() {
      task.abort();
      let _ = task.await;
    }
  }
}

impl Drop for Endpoint {
  fn drop(&mut self) {
    if let Some(task) = &self.task {
      task.abort();
    }
  }
}

/// Where to serve: an address, or a host name the task resolves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
  Addr(SocketAddr),
  Name(String, u16),
}

impl Target {
  /// A numeric host (`127.0.0.1`, `::`, or scoped `fe80::1%eth0` as
  /// net.isIP accepts it) is an address; anything else is a name for
  /// getaddrinfo.
  pub fn new(host: &str, port: u16) -> Target {
    match crate::sockets::parse_address(host, port) {
      Some(addr) => Target::Addr(addr),
      None => Target::Name(host.to_owned(), port),
    }
  }
}

/// Why an endpoint did not start.
#[derive(Debug)]
pub enum Failure {
  /// The host name did not resolve: libuv's errno for it (-3008 EAI_NONAME,
  /// -3001 EAI_AGAIN...).
  Lookup(i32),
  /// Binding or listening on `at` failed (for a name: the address it resolved to).
  Listen(io::Error, SocketAddr),
}

/// Where an endpoint was bound, or why not.
pub type Outcome = Result<SocketAddr, Failure>;

pub use self::lookup::UV_EAI_NONAME;

/// The first address of `target`; a name is resolved on the runtime's
/// blocking pool, so neither the core's loop nor the JS thread waits for DNS.
async fn resolve(target: Target) -> Result<SocketAddr, Failure> {
  match target {
    Target::Addr(addr) => Ok(addr),
    Target::Name(host, port) => lookup::first_address(host, port).await.map_err(Failure::Lookup),
  }
}

/// Serves on `target` from a task on the current runtime (the core's), after
/// `previous` is closed (so moving to the same port works). `bound` gets the
/// address bound (port 0 picks one), or why not.
pub fn start(
  target: Target,
  ask: Ask,
  counters: Arc<Counters>,
  previous: Option<Endpoint>,
  bound: impl FnOnce(Outcome) + Send + 'static,
) -> Endpoint {
  let task = tokio::spawn(async move {
    if let Some(p) = previous {
      p.closed().await;
    }
    let listener = match resolve(target).await {
      Ok(addr) => bind(addr).map_err(|e| Failure::Listen(e, addr)),
      Err(failure) => Err(failure),
    };
    match listener {
      Ok(listener) => {
        bound(listener.local_addr().map_err(|e| Failure::Listen(e, UNSPECIFIED)));
        accept_loop(listener, ask, counters).await;
      }
      Err(failure) => bound(Err(failure)),
    }
  });
  Endpoint { task: Some(task) }
}

/// Stands in for an address where none is known.
const UNSPECIFIED: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

/// Binds as the primary binds a worker's TCP server (Node's way: SO_REUSEADDR,
/// dual-stack for `::`, close-on-exec, non-blocking), and listens.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
  let os_error = |errno: i32| io::Error::from_raw_os_error(-errno);
  let socket = sockets::bind_tcp_at(addr, 0, false).map_err(os_error)?;
  sockets::listen(&socket, 511).map_err(os_error)?;
  TcpListener::from_std(socket.into())
}

async fn accept_loop(listener: TcpListener, ask: Ask, counters: Arc<Counters>) {
  let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
  let waiting = Arc::new(Waiting::default());
  loop {
    let conn = match listener.accept().await {
      Ok((conn, _)) => conn,
      // EMFILE and friends: back off instead of spinning.
      Err(_) => {
        tokio::time::sleep(Duration::from_millis(100)).await;
        continue;
      }
    };
    let permit = match permits.clone().try_acquire_owned() {
      Ok(permit) => permit,
      Err(_) if waiting.evict_oldest() => {
        match tokio::time::timeout(EVICT_WAIT, permits.clone().acquire_owned()).await {
          Ok(Ok(permit)) => permit,
          _ => continue, // dropped: closed unanswered
        }
      }
      Err(_) => continue,
    };
    let (ask, counters, place) = (ask.clone(), counters.clone(), waiting.join());
    tokio::spawn(async move {
      serve(conn, place, &ask, &counters).await;
      drop(permit);
    });
  }
}

async fn serve(mut conn: TcpStream, mut place: admission::Place, ask: &Ask, counters: &Arc<Counters>) {
  let head = tokio::select! {
    head = http::read_request(&mut conn) => head,
    _ = &mut place.evicted => return,
  };
  // Being answered now: no longer evictable.
  drop(place);
  let response = match head {
    Ok(req) => route(&req.method, &req.path, ask, counters).await,
    Err(BadRequest::Incomplete) => return,
    Err(BadRequest::TooLarge) => Response::text(431, "request head too large\n"),
    Err(BadRequest::Malformed) => Response::text(400, "malformed request\n"),
  };
  let _ = http::respond(&mut conn, &response).await;
}

async fn route(method: &str, path: &str, ask: &Ask, counters: &Arc<Counters>) -> Response {
  if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
    return Response::text(404, "not found: try /metrics, /healthz or /readyz\n");
  }
  if method != "GET" {
    let mut r = Response::text(405, "only GET is allowed\n");
    r.allow = Some("GET");
    return r;
  }
  let Some(snapshot) = snapshot(ask).await else {
    return Response::text(503, "the rcluster core is not answering\n");
  };
  match path {
    "/healthz" => Response::text(200, "ok\n"),
    "/readyz" => match ready::verdict(&snapshot) {
      Ok(()) => Response::text(200, "ready\n"),
      Err(reason) => Response::text(503, format!("{reason}\n")),
    },
    _ => {
      let reloads = counters.reloads.load(Ordering::Relaxed);
      // /proc reads and formatting off the core thread.
      let body = tokio::task::spawn_blocking(move || metrics_text(&snapshot, reloads)).await;
      match body {
        Ok(body) => Response {
          status: 200,
          content_type: exposition::CONTENT_TYPE,
          body,
          allow: None,
        },
        Err(_) => Response::text(503, "metrics could not be rendered\n"),
      }
    }
  }
}

/// A snapshot from the loop, proving it handles messages.
async fn snapshot(ask: &Ask) -> Option<Snapshot> {
  let (tx, rx) = oneshot::channel();
  if !ask(tx) {
    return None;
  }
  tokio::time::timeout(LOOP_TIMEOUT, rx).await.ok()?.ok()
}

fn metrics_text(snapshot: &Snapshot, reloads: u64) -> String {
  let usage: HashMap<_, _> = snapshot
    .workers
    .iter()
    .filter_map(|w| crate::supervisor::usage(w.pid).map(|u| (w.pid, u)))
    .collect();
  exposition::render(&exposition::Figures {
    snapshot,
    usage: &usage,
    primary: crate::supervisor::usage(std::process::id() as i32),
    reloads,
    stalls: crate::load::counters(),
  })
}

#[cfg(test)]
mod tests {
  use super::*;
  use tokio::io::{AsyncReadExt, AsyncWriteExt};

  async fn get(addr: SocketAddr, request: &str) -> String {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).await.unwrap();
    out
  }

  async fn start_now(addr: SocketAddr, ask: &Ask, previous: Option<Endpoint>) -> (Endpoint, Outcome) {
    let (tx, rx) = oneshot::channel();
    let ep = start(Target::Addr(addr), ask.clone(), Arc::default(), previous, move |r| {
      let _ = tx.send(r);
    });
    (ep, rx.await.unwrap())
  }

  #[tokio::test]
  async fn routes_and_refuses_a_taken_port() {
    let ask: Ask = Arc::new(|tx| tx.send(Snapshot::default()).is_ok());
    let (ep, addr) = start_now("127.0.0.1:0".parse().unwrap(), &ask, None).await;
    let addr = addr.unwrap();
    let ok = get(addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(
      ok.starts_with("HTTP/1.1 200 OK\r\n") && ok.ends_with("\r\n\r\nok\n"),
      "{ok}"
    );
    let not_ready = get(addr, "GET /readyz HTTP/1.1\r\n\r\n").await;
    assert!(
      not_ready.starts_with("HTTP/1.1 503 ") && not_ready.ends_with("no workers: none started yet, or all stopped\n")
    );
    let metrics = get(addr, "GET /metrics HTTP/1.0\r\n\r\n").await;
    assert!(metrics.contains("version=0.0.4") && metrics.contains("\nrcluster_workers 0\n"));
    let missing = get(addr, "GET /nope HTTP/1.1\r\n\r\n").await;
    assert!(missing.starts_with("HTTP/1.1 404 "));
    let post = get(addr, "POST /metrics HTTP/1.1\r\n\r\n").await;
    assert!(post.starts_with("HTTP/1.1 405 ") && post.contains("Allow: GET\r\n"));
    assert!(get(addr, "garbage\r\n\r\n").await.starts_with("HTTP/1.1 400 "));

    let (_other, taken) = start_now(addr, &ask, None).await;
    match taken {
      Err(Failure::Listen(e, at)) => assert!(e.kind() == io::ErrorKind::AddrInUse && at == addr, "{e} {at}"),
      other => panic!("{other:?}"),
    }
    // Moving to the very same port: the old socket is closed first.
    let (moved, again) = start_now(addr, &ask, Some(ep)).await;
    assert_eq!(again.unwrap(), addr);
    assert!(get(addr, "GET /healthz HTTP/1.1\r\n\r\n")
      .await
      .starts_with("HTTP/1.1 200 "));
    moved.closed().await;
    assert!(TcpStream::connect(addr).await.is_err(), "closed with the endpoint");
  }

  #[tokio::test]
  async fn names_resolve_on_the_runtime_and_a_bad_one_is_not_found() {
    assert_eq!(Target::new("::1", 9), Target::Addr("[::1]:9".parse().unwrap()));
    assert_eq!(Target::new("localhost", 9), Target::Name("localhost".into(), 9));
    let lo = "[::1%1]:9".parse().unwrap();
    assert_eq!(Target::new("::1%lo", 9), Target::Addr(lo), "an interface name");
    // libuv on Linux reads a zone only as an interface name.
    let unscoped = "[::1]:9".parse().unwrap();
    assert_eq!(Target::new("::1%1", 9), Target::Addr(unscoped), "a number");
    assert_eq!(
      Target::new("::1%x/y", 9),
      Target::Name("::1%x/y".into(), 9),
      "not net.isIP's zone"
    );
    let ask: Ask = Arc::new(|tx| tx.send(Snapshot::default()).is_ok());
    let started = |target| {
      let (tx, rx) = oneshot::channel();
      let ep = start(target, ask.clone(), Arc::default(), None, move |r| {
        let _ = tx.send(r);
      });
      async move { (ep, rx.await.unwrap()) }
    };
    let (_ep, addr) = started(Target::new("localhost", 0)).await;
    let addr = addr.unwrap();
    assert!(addr.ip().is_loopback(), "{addr}");
    assert!(get(addr, "GET /healthz HTTP/1.1\r\n\r\n")
      .await
      .starts_with("HTTP/1.1 200 "));
    let (_ep, missing) = started(Target::new("no-such-host.invalid", 0)).await;
    assert!(matches!(missing, Err(Failure::Lookup(UV_EAI_NONAME))), "{missing:?}");
  }

  #[tokio::test]
  async fn a_gone_loop_is_unhealthy() {
    let ask: Ask = Arc::new(|_| false);
    let (_ep, addr) = start_now("127.0.0.1:0".parse().unwrap(), &ask, None).await;
    let r = get(addr.unwrap(), "GET /healthz HTTP/1.1\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 503 "), "{r}");
  }
}
