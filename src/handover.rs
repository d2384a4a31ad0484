//! Who reads a worker's channel.
//!
//! By default the core thread does (`channel::read_loop`). In the addon, the
//! JS thread does instead (`uv_reader`): a user message then goes from the
//! worker to JS without crossing a thread, as node:cluster's primary reads
//! its channels. The core still judges everything else: the reader hands each
//! internal frame (and EOF, errors) to the core's loop through `ToCore`,
//! exactly as `read_loop` would have, so the core's state machine is the same
//! whoever reads.
//!
//! Order: a worker's events reach JS in the order the worker sent them. While
//! anything the reader handed to the core is still being handled there
//! (`ToCore::busy`), user frames are handed to the core too, behind it.
//!
//! A stuck JS thread must not stall the core's own traffic (hand-off answers,
//! handle ACKs): round-robin keeps serving while the primary's JavaScript is
//! blocked. So the core watches the channels it handed over (`watch`): when
//! one stays readable while the JS reader has not run, the core reads it
//! itself, under the same lock, everything through `ToCore` as if forwarded,
//! until the JS thread turns again.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use crate::channel::{Inbox, ReaderEvent, Stop};
use crate::framing::Serialization;
use crate::readiness::AnyReadable;

/// A worker's channel, for a reader other than the core's.
pub struct Handover {
  pub id: u32,
  pub mode: Serialization,
  pub channel: Arc<Channel>,
}

/// The read side of a handed-over channel, shared by its reader and the
/// core's watch.
pub struct Channel {
  /// The core's socket (shared with its writer); the JS reader polls a
  /// duplicate, so the core's shutdown still ends it with EOF.
  pub sock: Arc<OwnedFd>,
  /// Whoever reads holds it, deciding where each frame goes before letting
  /// go, so frames read by one cannot overtake those read by the other.
  pub inbox: Mutex<Inbox>,
  pub to_core: ToCore,
  /// EOF, an error or garbage was read: nobody reads any more.
  pub ended: AtomicBool,
}

impl Channel {
  pub fn new(mode: Serialization, sock: Arc<OwnedFd>, to_core: ToCore) -> Arc<Self> {
    Arc::new(Channel {
      sock,
      inbox: Mutex::new(Inbox::new(mode)),
      to_core,
      ended: AtomicBool::new(false),
    })
  }

  /// Marks the channel ended and tells the core.
  pub fn end(&self, error: Option<String>) {
    self.ended.store(true, Ordering::Release);
    self.to_core.send(ReaderEvent::End { error });
  }
}

/// Turns of the JS reader (any channel's): the watch's sign of life.
pub static JS_TURNS: AtomicU64 = AtomicU64::new(0);

/// How often the core looks for channels the JS thread leaves unread.
const WATCH_TICK: Duration = Duration::from_millis(10);
/// While the JS thread is stuck, how often the core reads for it.
const STUCK_TICK: Duration = Duration::from_millis(1);
/// Reads (of 64 KiB) per channel per tick, when the core reads.
const CORE_READS: usize = 16;
/// Looks in a row with nothing to read and no turn of the JS reader, after
/// which the watch stops ticking until a channel is readable (`doze`).
const IDLE_LOOKS: u32 = 3;

/// Rung by `offer`: a channel the watch does not wait on yet.
static NEW_CHANNEL: Notify = Notify::const_new();

static WATCHED: Mutex<Vec<Weak<Channel>>> = Mutex::new(Vec::new());

/// The way from a reader to the core's loop.
pub struct ToCore {
  send: Box<dyn Fn(ReaderEvent, Arc<AtomicUsize>) + Send + Sync>,
  /// Sent and not yet handled by the core (decremented there, after the
  /// events it emitted for them are queued for JS).
  in_core: Arc<AtomicUsize>,
}

impl ToCore {
  /// `send` delivers an event to the loop, which must call `handled` with the
  /// counter once it has handled it.
  pub fn new(send: impl Fn(ReaderEvent, Arc<AtomicUsize>) + Send + Sync + 'static) -> Self {
    ToCore {
      send: Box::new(send),
      in_core: Arc::default(),
    }
  }

  pub fn send(&self, event: ReaderEvent) {
    self.in_core.fetch_add(1, Ordering::Relaxed);
    (self.send)(event, self.in_core.clone());
  }

  /// Something sent is not handled yet: a user frame must follow it through
  /// the core rather than overtake it.
  pub fn busy(&self) -> bool {
    // Acquire: pairs with `handled`, so once this says false, the events the
    // core emitted are visible in the pump's queue.
    self.in_core.load(Ordering::Acquire) > 0
  }
}

/// Called by the loop once it has handled what a reader sent (and queued its
/// events).
pub fn handled(in_core: &AtomicUsize) {
  in_core.fetch_sub(1, Ordering::Release);
}

type Host = Box<dyn Fn(Handover) + Send + Sync>;

static HOST: OnceLock<Host> = OnceLock::new();

/// Makes `host` the reader of every channel started from now on.
pub fn set_host(host: impl Fn(Handover) + Send + Sync + 'static) {
  let _ = HOST.set(Box::new(host));
}

/// Gives the channel to the host, if there is one (and watches it); else
/// returns it. On the core's runtime.
pub fn offer(handover: Handover) -> Option<Handover> {
  let Some(host) = HOST.get() else { return Some(handover) };
  let mut watched = WATCHED.lock().unwrap();
  if watched.is_empty() {
    tokio::spawn(watch());
  }
  watched.push(Arc::downgrade(&handover.channel));
  drop(watched);
  // A permit if the watch does not wait yet: it never misses this channel.
  NEW_CHANNEL.notify_one();
  host(handover);
  None
}

/// Reads, on the core thread, the channels the JS thread leaves unread: one
/// that is readable at two looks in a row with no turn of the JS reader in
/// between has a stuck JS thread (an idle one would have woken). Then the
/// core reads at every (shorter) tick until the JS reader turns again or
/// nothing is left to read. Ends when no channel is left.
///
/// While nothing happens (`IDLE_LOOKS` looks with nothing readable and no JS
/// turn) it stops ticking and dozes until a channel is readable or a new one
/// is offered; the look it makes then counts as the first of the two. While
/// messages flow it keeps ticking (the JS reader turns), so a busy channel
/// does not wake the core once per message.
async fn watch() {
  let mut turns = JS_TURNS.load(Ordering::Acquire);
  let mut readable_before = false;
  let mut stuck = false;
  let mut idle = 0;
  loop {
    if idle >= IDLE_LOOKS {
      let Some(channels) = watched() else { return };
      doze(channels).await;
      (turns, readable_before, stuck, idle) = (JS_TURNS.load(Ordering::Acquire), false, false, 0);
    } else {
      tokio::time::sleep(if stuck { STUCK_TICK } else { WATCH_TICK }).await;
    }
    let Some(channels) = watched() else { return };
    let now = JS_TURNS.load(Ordering::Acquire);
    if now != turns {
      (turns, readable_before, stuck, idle) = (now, false, false, 0);
      continue;
    }
    let readable: Vec<&Arc<Channel>> = channels.iter().filter(|c| readable_now(c)).collect();
    stuck = !readable.is_empty() && (stuck || readable_before);
    readable_before = !readable.is_empty();
    idle = if readable.is_empty() { idle + 1 } else { 0 };
    if stuck {
      for c in readable {
        read_for_js(c);
      }
    }
  }
}

/// The channels still watched, or `None` (and the watch ends) if none is.
fn watched() -> Option<Vec<Arc<Channel>>> {
  let mut watched = WATCHED.lock().unwrap();
  watched.retain(|w| w.upgrade().is_some_and(|c| !c.ended.load(Ordering::Acquire)));
  if watched.is_empty() {
    return None;
  }
  Some(watched.iter().filter_map(Weak::upgrade).collect())
}

/// Waits until one of `channels` is readable (at once if one is already), or
/// a channel is offered. If the kernel will not watch them (no fd left, say),
/// the watch goes on ticking.
async fn doze(channels: Vec<Arc<Channel>>) {
  let Ok(bell) = AnyReadable::new(channels.iter().map(|c| c.sock.as_raw_fd())) else {
    return;
  };
  // Not held while dozing: a channel that ends meanwhile is freed (its
  // socket, inbox and way to the core) rather than kept until the next look.
  drop(channels);
  tokio::select! {
    _ = bell.wait() => {}
    _ = NEW_CHANNEL.notified() => {}
  }
}

fn readable_now(c: &Channel) -> bool {
  let mut p = libc::pollfd {
    fd: c.sock.as_raw_fd(),
    events: libc::POLLIN,
    revents: 0,
  };
  // SAFETY: one valid pollfd; a zero timeout never blocks.
  unsafe { libc::poll(&mut p, 1, 0) > 0 && p.revents != 0 }
}

/// The core reads a channel the JS thread cannot: every frame goes to the
/// loop as if forwarded (user frames reach JS through the pump).
fn read_for_js(c: &Channel) {
  // Held by the JS reader: it is not stuck after all.
  let Ok(mut inbox) = c.inbox.try_lock() else { return };
  if c.ended.load(Ordering::Acquire) {
    return;
  }
  let mut sink = |msg| c.to_core.send(ReaderEvent::Message(msg));
  if let Stop::End(error) = inbox.read_frames(c.sock.as_raw_fd(), CORE_READS, false, &mut sink) {
    c.end(error);
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn busy_until_everything_sent_is_handled() {
    let (tx, rx) = std::sync::mpsc::channel();
    let to_core = ToCore::new(move |_, counter| tx.send(counter).unwrap());
    assert!(!to_core.busy());
    to_core.send(ReaderEvent::End { error: None });
    to_core.send(ReaderEvent::End { error: None });
    assert!(to_core.busy());
    handled(&rx.recv().unwrap());
    assert!(to_core.busy(), "one is still in the core");
    handled(&rx.recv().unwrap());
    assert!(!to_core.busy());
  }
}
