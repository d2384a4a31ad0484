//! What a worker says on its channel, and the server work it leads to:
//! Node's cluster acts (`online`, `queryServer`, `listening`, `close`,
//! `exitedAfterDisconnect`), answers to `newconn` hand-offs (matched by seq to
//! the worker's pending ones), handles and user messages. Part of `State`'s
//! loop: each act goes to its owner (`Servers`, the worker's `Session`) and
//! the loop carries out what they return.

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use super::events::{Event, Received};
use super::servers::{HandOffTo, Released};
use super::session::Session;
use super::state::State;
use super::Msg;
use crate::channel::WriterCmd;
use crate::direct::Answer;
use crate::dispatch::HandOff;
use crate::handles::{Deliver, VACANT_LINGER};
use crate::protocol::{self, Fields, Inbound};
use crate::sockets;
use crate::supervisor::Supervision;

impl State {
  pub(super) fn on_message(&mut self, id: u32, msg: Inbound) {
    match msg {
      Inbound::Cluster(f) => self.on_cluster(id, f),
      Inbound::NewconnReply { ack, accepted } => self.on_newconn_reply(id, ack, accepted),
      Inbound::HandleAck => self.handle_answered(id, true),
      Inbound::HandleNack => self.handle_answered(id, false),
      Inbound::Handle {
        envelope,
        handle_type,
        fd,
      } => match fd {
        Some(fd) => {
          self.send_internal(id, &protocol::handle_ack(true), None);
          let socket = sockets::describe(fd.as_raw_fd());
          let handle = Some(Received {
            fd,
            handle_type,
            socket,
          });
          self.emit(
            id,
            Event::Message {
              frame: envelope,
              handle,
            },
          );
        }
        None => self.send_internal(id, &protocol::handle_ack(false), None),
      },
      Inbound::Rcluster(f) => {
        if f.get("act").and_then(Value::as_str) == Some("heartbeat") {
          if let Some(w) = self.sessions.get_mut(&id) {
            w.last_heartbeat = Some(Instant::now());
          }
          self.observe_heartbeat(id, f.get("lag").and_then(Value::as_f64));
        } else {
          self.emit(id, Event::Internal(Value::Object(f)));
        }
      }
      Inbound::SocketList(f) => self.emit(id, Event::Internal(Value::Object(f))),
      Inbound::OtherInternal => {}
      Inbound::User(frame) => self.emit(id, Event::Message { frame, handle: None }),
      Inbound::Garbage(reason) => self.on_channel_end(id, Some(reason)),
    }
  }

  fn on_cluster(&mut self, id: u32, f: Fields) {
    match protocol::act(&f) {
      Some("online") => self.emit(id, Event::Online),
      Some("queryServer") => self.query_server(id, &f),
      Some("listening") => {
        let info = protocol::listening_info(&f);
        self.observe_listening(id, &info);
        self.emit(id, Event::Listening(info));
      }
      Some("close") => {
        if let Some(key) = f.get("key").and_then(Value::as_str) {
          let released = self.servers.release(id, key, false);
          self.after_release(key, released);
        }
      }
      Some("exitedAfterDisconnect") => {
        if let Some(w) = self.sessions.get_mut(&id) {
          w.life.leave(false);
        }
        self.reaper_leave(id, self.kill_timeout, false);
        self.emit(id, Event::ExitedAfterDisconnect);
        if let Some(seq) = protocol::seq(&f) {
          self.send_cluster(id, json!({ "ack": seq }), None);
        }
      }
      // A reply: the only requests we make that expect one are `newconn`.
      None => {
        if let Some(ack) = f.get("ack").and_then(Value::as_u64) {
          let accepted = f.get("accepted").and_then(Value::as_bool).unwrap_or(false);
          self.on_newconn_reply(id, ack, accepted);
        }
      }
      Some(_) => {}
    }
  }

  fn query_server(&mut self, id: u32, f: &Fields) {
    if !self.sessions.get(&id).is_some_and(|w| w.life.takes_servers()) {
      return;
    }
    let tx = self.tx.clone();
    // Every fork has a slot; an unsupervised worker would get its own.
    let slot = self
      .sessions
      .get(&id)
      .and_then(|w| w.supervision.as_ref())
      .map_or(u32::MAX - id, |s| s.slot);
    let reply = self.servers.query(id, slot, f, move |generation| -> Deliver {
      Arc::new(move |conns| {
        let _ = tx.send(Msg::Accepted { generation, conns });
      })
    });
    if let Some(refused) = reply.steering_refused {
      self.emit(id, Event::SteeringRefused(refused));
    }
    self.send_cluster(id, reply.fields, reply.handle);
    self.start_load_watch();
    if let Some(key) = reply.distribute {
      self.distribute(&key);
    }
  }

  /// A key was released: look again later at lingering sockets, and offer
  /// its queue to the remaining workers.
  pub(super) fn after_release(&mut self, key: &str, released: Released) {
    match released {
      Released::Closed => return,
      Released::Lingering => self.timers.after(VACANT_LINGER, Msg::Linger { key: key.to_owned() }),
      Released::Kept => {}
    }
    self.distribute(key);
  }

  /// Lets go of everything `id` holds: its servers, and the connections
  /// handed to it but not accepted, which go to the others. Unless it
  /// `left` on purpose, a supervised worker's sockets wait for its
  /// replacement.
  pub(super) fn release_all(&mut self, id: u32, left: bool) {
    let Some(w) = self.sessions.get_mut(&id) else { return };
    let replaced = !left && w.supervision.as_ref().is_some_and(Supervision::replaces_crashed);
    let unanswered: Vec<HandOff> = w.pending.drain().collect();
    for (key, released) in self.servers.release_all(id, replaced) {
      self.after_release(&key, released);
    }
    let mut touched = Vec::new();
    for h in unanswered {
      if self.servers.requeue(&h.key, h.conn, true) && !touched.contains(&h.key) {
        touched.push(h.key);
      }
    }
    for key in touched {
      self.distribute(&key);
    }
  }

  /// Hands queued connections of `key` to available workers.
  pub(super) fn distribute(&mut self, key: &str) {
    loop {
      let sessions = &self.sessions;
      let load = |w| sessions.get(&w).and_then(Session::load);
      let Some(HandOffTo {
        worker,
        conn,
        key: shared,
      }) = self.servers.next_handoff(key, load)
      else {
        return;
      };
      let Some(w) = self.sessions.get_mut(&worker) else {
        return;
      };
      let seq = w.pending.request(HandOff {
        key: shared,
        conn: conn.clone(),
      });
      w.channel.handle_frame(protocol::newconn_frame(w.mode, seq, key), conn);
      w.handoff_total.fetch_add(1, Ordering::Relaxed);
    }
  }

  /// The worker's ACK/NACK of the handle in flight: settled by the outbox
  /// when the core wrote it, else by the writer.
  fn handle_answered(&mut self, id: u32, ok: bool) {
    let Some(w) = self.sessions.get(&id) else { return };
    match w.channel.outbox.answered(ok) {
      Answer::ToWriter => w.channel.command(if ok {
        WriterCmd::HandleAck
      } else {
        WriterCmd::HandleNack
      }),
      Answer::Settled => {}
      Answer::WakeWriter => w.channel.command(WriterCmd::Settled),
      Answer::Resend(frame, tries) => w.channel.command(WriterCmd::Resend(frame, tries)),
    }
  }

  /// A worker's answer to a `newconn`: matched by its `ack` to the hand-off
  /// it answers; anything else is not an answer we wait for.
  fn on_newconn_reply(&mut self, id: u32, ack: u64, accepted: bool) {
    let Some(h) = self.sessions.get_mut(&id).and_then(|w| w.pending.answer(ack)) else {
      return;
    };
    if !accepted {
      // The worker closed that server or is at maxConnections: try another.
      self.servers.requeue(&h.key, h.conn, false);
    }
    // Dropping an accepted `conn` closes the primary's copy.
    self.distribute(&h.key);
  }
}
