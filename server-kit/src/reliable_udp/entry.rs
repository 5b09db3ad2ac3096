//! One connection as the socket's task holds it: the state machine and the ends of the
//! channels to its handle, and what a flush does with them (retrying queued sends, giving send
//! permits back as the peer acknowledges, turning events into the handle's status, moving
//! delivered messages to the handle under back-pressure).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use protocol::reliable::{Connection, Event, SendError};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};
use tracing::debug;

use super::{ConnectionEnded, Key, Shared, Status};

/// A send waiting for room in the machine's send queue, with the permits it took.
type PendingSend = (Bytes, u32);

/// One connection as the task holds it.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) machine: Connection,
    /// To the handle; `None` once the end has been delivered or the handle is gone.
    delivered: Option<mpsc::Sender<Bytes>>,
    /// A message taken from the machine that the full channel could not take yet.
    held: Option<Bytes>,
    /// Sends waiting for room in the machine's queue (rarely more than one: the handle's
    /// permits hold it back first).
    pending: VecDeque<PendingSend>,
    /// Send permits taken by the messages the machine holds, not yet given back.
    credit_held: usize,
    status: watch::Sender<Status>,
    shared: Arc<Shared>,
    /// The deadline filed in the timer set.
    pub(super) deadline: Option<Instant>,
    /// Listed for this round's flush.
    pub(super) touched: bool,
    /// The handle was dropped and the close is under way.
    abandoned: bool,
}

impl Entry {
    /// An entry for `machine`, whose handle holds the other ends of `delivered` and `status`.
    pub(super) fn new(
        machine: Connection,
        delivered: mpsc::Sender<Bytes>,
        status: watch::Sender<Status>,
        shared: Arc<Shared>,
    ) -> Entry {
        Entry {
            machine,
            delivered: Some(delivered),
            held: None,
            pending: VecDeque::new(),
            credit_held: 0,
            status,
            shared,
            deadline: None,
            touched: false,
            abandoned: false,
        }
    }

    /// Queues `message`, which took `credit` send permits, or keeps it until the machine's
    /// send queue has room.
    pub(super) fn send(&mut self, message: Bytes, credit: u32) {
        self.pending.push_back((message, credit));
        self.retry_pending();
    }

    /// Whether a delivered message waits for room in the handle's channel.
    pub(super) fn is_holding(&self) -> bool {
        self.held.is_some()
    }

    /// If the handle was dropped (and this is the first look since), closes gracefully and
    /// drops whatever arrives; returns whether it did.
    pub(super) fn abandon_if_dropped(&mut self) -> bool {
        if self.abandoned || !self.shared.dropped.load(Ordering::Acquire) {
            return false;
        }
        self.abandoned = true;
        self.delivered = None;
        self.held = None;
        self.drop_pending();
        self.close();
        true
    }

    /// Whether nothing more will happen: the machine is closed and everything delivered.
    pub(super) fn is_finished(&self) -> bool {
        self.machine.is_closed() && self.held.is_none()
    }

    /// After the round's datagrams are out: events to the status, messages to the handle,
    /// counters published.
    pub(super) fn settle(&mut self, key: Key) {
        self.take_events(key);
        self.deliver();
        self.give_back_credit();
        self.publish_stats();
    }

    /// Queues waiting sends in order while the machine's send queue has room.
    pub(super) fn retry_pending(&mut self) {
        while let Some((message, credit)) = self.pending.pop_front() {
            match self.machine.send(message.clone()) {
                Ok(()) => self.credit_held += credit as usize,
                Err(SendError::QueueFull) => {
                    self.pending.push_front((message, credit));
                    return;
                }
                Err(error @ (SendError::TooLarge { .. } | SendError::Closed)) => {
                    // The handle checked the size, and stops sending once the connection has
                    // ended or it closed it: a message that crossed the end goes with it.
                    debug!(%error, "a message dropped");
                    self.shared.credit.add_permits(credit as usize);
                }
            }
        }
    }

    /// Drops the sends waiting for room, giving their permits back.
    fn drop_pending(&mut self) {
        let credit: usize = self.pending.drain(..).map(|(_, c)| c as usize).sum();
        self.shared.credit.add_permits(credit);
    }

    /// Gives back the permits of the bytes the peer has acknowledged: as many as the machine
    /// holds fewer unacknowledged bytes than the permits held (a message's permits are at most
    /// its length, or one for an empty message, so every permit comes back once the machine
    /// holds nothing).
    fn give_back_credit(&mut self) {
        let held = self.machine.unacknowledged_bytes();
        if self.credit_held > held {
            self.shared.credit.add_permits(self.credit_held - held);
            self.credit_held = held;
        }
    }

    /// Turns the machine's events into the handle's status.
    fn take_events(&mut self, key: Key) {
        while let Some(event) = self.machine.poll_event() {
            debug!(peer = %key.0, connection_id = key.1, ?event, "reliable connection event");
            let why = match event {
                Event::Connected => {
                    self.status.send_if_modified(|status| {
                        let connecting = *status == Status::Connecting;
                        if connecting {
                            *status = Status::Open;
                        }
                        connecting
                    });
                    continue;
                }
                Event::Closed => ConnectionEnded::Closed,
                Event::ClosedByPeer => ConnectionEnded::ClosedByPeer,
                Event::PeerDead => ConnectionEnded::PeerDead,
                Event::IdleTimeout => ConnectionEnded::IdleTimeout,
                Event::ProtocolViolation(what) => ConnectionEnded::ProtocolViolation(what),
            };
            self.end(why);
        }
    }

    /// Records the end (the first reason wins) and fails the waiting sends.
    pub(super) fn end(&mut self, why: ConnectionEnded) {
        self.status.send_if_modified(|status| {
            let open = !matches!(status, Status::Ended(_));
            if open {
                *status = Status::Ended(why.clone());
            }
            open
        });
        // A handle waiting for permits learns of the end.
        self.shared.credit.close();
        self.drop_pending();
    }

    /// Whether the connection has ended (it may still drain).
    pub(super) fn is_ended(&self) -> bool {
        matches!(*self.status.borrow(), Status::Ended(_))
    }

    /// Queues the machine's close, after everything sent so far.
    pub(super) fn close(&mut self) {
        self.machine.close();
    }

    /// Moves delivered messages to the handle until its channel is full; closes the channel
    /// once the connection has ended and everything is delivered.
    fn deliver(&mut self) {
        while let Some(channel) = &self.delivered {
            let Some(message) = self.held.take().or_else(|| self.machine.recv()) else {
                break;
            };
            match channel.try_send(message) {
                Ok(()) => {}
                Err(TrySendError::Closed(_)) => self.delivered = None,
                Err(TrySendError::Full(message)) => {
                    // Ask the handle for a ring, then look again in case it made room meanwhile.
                    self.shared.want_room.store(true, Ordering::Release);
                    if let Err(TrySendError::Full(message) | TrySendError::Closed(message)) =
                        channel.try_send(message)
                    {
                        self.held = Some(message);
                        return;
                    }
                }
            }
        }
        if self.delivered.is_none() {
            while self.machine.recv().is_some() {} // nobody is listening
        } else if self.is_ended() {
            self.delivered = None;
        }
    }

    /// Copies the machine's counters where the handle reads them.
    fn publish_stats(&self) {
        let stats = self.machine.stats();
        *self
            .shared
            .stats
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = stats;
    }
}

impl Drop for Entry {
    /// However the task lets go of the connection (even unwinding from a panic), a handle
    /// waiting for send permits must not wait for ever.
    fn drop(&mut self) {
        self.shared.credit.close();
    }
}
