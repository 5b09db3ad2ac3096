//! The task that owns one UDP socket and every connection state machine on it.
//!
//! Each round waits for one of: datagrams on the socket (then every readable one is taken, up to
//! [`RECV_BATCH`], in batches: see [`super::io`]), commands from the handles
//! (then every queued one), the attention bell (a handle made room in its delivery channel or
//! was dropped), or the earliest state-machine deadline (kept in a sorted set, so a round costs
//! no scan of every connection). Then each connection the round touched is flushed once: queued
//! sends retried, datagrams drained to the socket, events turned into the handle's status,
//! delivered messages moved to the handle, counters published, its deadline re-filed, and the
//! connection forgotten once it is closed and fully delivered. Flushing once per round rather
//! than once per datagram lets one ack answer a whole batch, and the datagrams of a round leave
//! in GSO batches. A round that left a handle's delivery channel full ends by yielding to the
//! runtime, so that the reader gets to empty it.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use protocol::reliable::{Config, Connection, header::Header};
use tokio::net::UdpSocket;
use tokio::sync::mpsc::OwnedPermit;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{Notify, mpsc, watch};
use tracing::{debug, trace};

use super::entry::Entry;
use super::io::{DatagramSocket, Received};
use super::{
    ConnectionEnded, DriverError, Key, ListenerCounters, ReliableConnection, SendLimits, Shared,
    Status, give_up_after,
};

/// Datagrams taken from the socket in one round before the touched connections are flushed.
const RECV_BATCH: usize = 128;
/// Commands taken from the handles in one round.
const COMMAND_BATCH: usize = 128;
/// Commands from the handles waiting for the task, at most.
const COMMAND_QUEUE: usize = 256;
/// Delivered messages waiting in a handle's channel, at most.
const DELIVERY_QUEUE: usize = 64;

/// A request from a handle.
#[derive(Debug)]
pub(super) enum Command {
    /// Queue a message, which took `credit` of the connection's send permits.
    Send {
        key: Key,
        message: Bytes,
        credit: u32,
    },
    /// Close gracefully.
    Close { key: Key },
}

/// The server side's part: where new connections go, and how many may be open.
#[derive(Debug)]
pub(super) struct Accepting {
    pub(super) queue: mpsc::Sender<ReliableConnection>,
    pub(super) max_peers: usize,
    pub(super) counters: Arc<ListenerCounters>,
}

/// The socket's task: the socket, the commands from the handles, and the connections.
pub(super) struct Endpoint {
    socket: DatagramSocket,
    commands: mpsc::Receiver<Command>,
    connections: Connections,
}

/// Every connection on the socket and what the task needs to route to them.
struct Connections {
    local_addr: SocketAddr,
    config: Config,
    entries: HashMap<Key, Entry>,
    timers: BTreeSet<(Instant, Key)>,
    touched: Vec<Key>,
    command_sender: mpsc::Sender<Command>,
    attention: Arc<Notify>,
    accepting: Option<Accepting>,
    /// Datagrams that belonged to no connection (client side; the server counts in `accepting`).
    unrouted: u64,
}

impl Endpoint {
    /// An endpoint on `socket`; a server if `accepting` is given.
    pub(super) fn new(
        socket: UdpSocket,
        config: Config,
        accepting: Option<Accepting>,
    ) -> Result<Endpoint, DriverError> {
        let socket = DatagramSocket::new(socket)?;
        let (command_sender, commands) = mpsc::channel(COMMAND_QUEUE);
        let connections = Connections {
            local_addr: socket.local_addr()?,
            config,
            entries: HashMap::new(),
            timers: BTreeSet::new(),
            touched: Vec::new(),
            command_sender,
            attention: Arc::new(Notify::new()),
            accepting,
            unrouted: 0,
        };
        Ok(Endpoint {
            socket,
            commands,
            connections,
        })
    }

    pub(super) fn local_addr(&self) -> SocketAddr {
        self.connections.local_addr
    }

    /// Adds `machine` as the connection `key` and returns its handle.
    pub(super) fn open(&mut self, key: Key, machine: Connection) -> ReliableConnection {
        self.connections.open(key, machine)
    }

    /// Runs until no connection is left and none can come.
    pub(super) async fn run(mut self) {
        let sleep = tokio::time::sleep(std::time::Duration::ZERO);
        tokio::pin!(sleep);
        let mut armed: Option<Instant> = None;
        loop {
            self.flush_touched().await;
            if self.connections.is_finished() {
                break;
            }
            let next = self.connections.timers.first().map(|&(at, _)| at);
            if next != armed {
                if let Some(at) = next {
                    sleep.as_mut().reset(at.into());
                }
                armed = next;
            }
            let accept_closed = self.connections.accept_queue_closed();
            tokio::select! {
                ready = self.socket.readable() => match ready {
                    Ok(()) => self.receive_batch(),
                    Err(error) => debug!(%error, "UDP socket not readable"),
                },
                Some(command) = self.commands.recv() => self.on_commands(command),
                () = self.connections.attention.notified() => self.connections.on_attention(),
                () = &mut sleep, if armed.is_some() => {
                    armed = None;
                    self.connections.on_timers();
                }
                () = accept_closed, if self.connections.accepting.is_some() => {
                    debug!(addr = %self.local_addr(), "listener dropped; serving the open connections to their end");
                    self.connections.accepting = None;
                }
            }
        }
        self.connections.end_all(ConnectionEnded::DriverStopped);
        debug!(addr = %self.local_addr(), unrouted = self.connections.unrouted, "reliable UDP endpoint stopped");
    }

    /// Takes every datagram the socket has (up to a batch) and hands each to its connection.
    fn receive_batch(&mut self) {
        let mut received = 0;
        let now = tokio::time::Instant::now().into_std();
        while received < RECV_BATCH {
            let connections = &mut self.connections;
            match self
                .socket
                .try_recv(|from, datagram| connections.on_datagram(from, datagram, now))
            {
                Ok(0) => break,
                Ok(count) => received += count,
                Err(error) => {
                    // ICMP errors reported on the socket (a peer's port closed) and the like:
                    // the state machines' timers deal with the consequences.
                    debug!(%error, "UDP receive failed");
                    break;
                }
            }
        }
    }

    /// Handles `first` and every other command already queued.
    fn on_commands(&mut self, first: Command) {
        self.connections.on_command(first);
        for _ in 1..COMMAND_BATCH {
            match self.commands.try_recv() {
                Ok(command) => self.connections.on_command(command),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
    }

    /// Flushes every connection the round touched, then sends the last batch of datagrams.
    async fn flush_touched(&mut self) {
        let touched = std::mem::take(&mut self.connections.touched);
        let mut holding = false;
        for &key in &touched {
            holding |= self.flush(key).await;
        }
        self.socket.flush().await;
        if holding {
            // A handle's delivery channel is full: let its reader run (it may be queued behind
            // this task on the same worker) before reading more from the socket, rather than
            // filling the state machine's receive buffer until it drops packets.
            tokio::task::yield_now().await;
        }
        // Hand the allocation back for the next round, keeping anything touched meanwhile.
        let mut touched = touched;
        touched.clear();
        touched.append(&mut self.connections.touched);
        self.connections.touched = touched;
    }

    /// Everything a connection has to do after a round of input; returns whether a delivered
    /// message waits for room in the handle's channel.
    async fn flush(&mut self, key: Key) -> bool {
        let Some(entry) = self.connections.entries.get_mut(&key) else {
            return false;
        };
        entry.touched = false;
        entry.retry_pending();
        let now = tokio::time::Instant::now().into_std();
        let max_len = self.connections.config.max_datagram_size;
        self.socket
            .send_all(key.0, &mut entry.machine, max_len, now)
            .await;
        entry.settle(key);
        let deadline = entry.machine.poll_timeout();
        let finished = entry.is_finished();
        let holding = entry.is_holding();
        self.connections.refile(key, deadline);
        if finished {
            self.connections.remove(key);
        }
        holding
    }
}

impl Connections {
    /// Adds `machine` as the connection `key` and returns its handle.
    fn open(&mut self, key: Key, machine: Connection) -> ReliableConnection {
        let (delivered_tx, delivered_rx) = mpsc::channel(DELIVERY_QUEUE);
        let (status_tx, status_rx) = watch::channel(Status::Connecting);
        let shared = Arc::new(Shared::new(self.config.max_send_queue));
        let entry = Entry::new(machine, delivered_tx, status_tx, Arc::clone(&shared));
        self.entries.insert(key, entry);
        self.touch(key);
        ReliableConnection {
            key,
            local_addr: self.local_addr,
            commands: self.command_sender.clone(),
            delivered: delivered_rx,
            status: status_rx,
            shared,
            attention: Arc::clone(&self.attention),
            give_up: give_up_after(&self.config),
            limits: SendLimits::new(&self.config),
            closing: false,
        }
    }

    /// A future that completes once the listener is gone.
    fn accept_queue_closed(&self) -> impl Future<Output = ()> + use<> {
        let queue = self.accepting.as_ref().map(|a| a.queue.clone());
        async move {
            match queue {
                Some(queue) => queue.closed().await,
                None => std::future::pending().await,
            }
        }
    }

    fn is_finished(&self) -> bool {
        self.entries.is_empty() && self.accepting.is_none()
    }

    fn touch(&mut self, key: Key) {
        if let Some(entry) = self.entries.get_mut(&key) {
            if !entry.touched {
                entry.touched = true;
                self.touched.push(key);
            }
        }
    }

    fn on_datagram(&mut self, from: SocketAddr, received: Received<'_>, now: Instant) {
        let datagram = received.bytes();
        let Some(connection_id) = Header::peek_connection_id(datagram) else {
            self.count_unrouted(from, "not a reliable-datagram packet");
            return;
        };
        let key = (from, connection_id);
        if let Some(entry) = self.entries.get_mut(&key) {
            match received {
                Received::Lent(datagram) => entry.machine.handle_datagram(now, datagram),
                Received::Shared(datagram) => entry.machine.handle_datagram_bytes(now, datagram),
            }
            if !entry.touched {
                entry.touched = true;
                self.touched.push(key);
            }
        } else if self.accepting.is_some() && Connection::is_hello(datagram) {
            self.on_hello(key, datagram, now);
        } else {
            self.count_unrouted(from, "a packet of no open connection");
        }
    }

    fn count_unrouted(&mut self, from: SocketAddr, what: &str) {
        trace!(%from, what, "datagram dropped");
        match &self.accepting {
            Some(accepting) => {
                accepting.counters.unrouted.fetch_add(1, Ordering::Relaxed);
            }
            None => self.unrouted += 1,
        }
    }

    /// A hello for a connection not open yet: opened if there is room, else refused.
    fn on_hello(&mut self, key: Key, datagram: &[u8], now: Instant) {
        let Some(slot) = self.reserve_accept_slot(key) else {
            return;
        };
        let Some(machine) = Connection::server(datagram, self.config.clone(), now) else {
            return;
        };
        debug!(peer = %key.0, connection_id = key.1, "reliable connection opened");
        let handle = self.open(key, machine);
        slot.send(handle);
    }

    /// A place in the accept queue for one more connection, unless `max_peers` are open or the
    /// queue is full (then the hello is counted and dropped). A connection that has ended but
    /// still drains (acknowledging what its peer sends again) no longer counts.
    fn reserve_accept_slot(&self, key: Key) -> Option<OwnedPermit<ReliableConnection>> {
        let accepting = self.accepting.as_ref()?;
        let open = self.entries.values().filter(|e| !e.is_ended()).count();
        let slot = if open >= accepting.max_peers {
            Err("max_peers connections are open")
        } else {
            (accepting.queue.clone().try_reserve_owned()).map_err(|_| "the accept queue is full")
        };
        slot.inspect_err(|why| {
            accepting.counters.refused.fetch_add(1, Ordering::Relaxed);
            debug!(peer = %key.0, connection_id = key.1, why, "hello refused");
        })
        .ok()
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Send {
                key,
                message,
                credit,
            } => {
                // A missing entry has ended (and the handle knows): the message goes with it.
                if let Some(entry) = self.entries.get_mut(&key) {
                    entry.send(message, credit);
                    self.touch(key);
                }
            }
            Command::Close { key } => {
                if let Some(entry) = self.entries.get_mut(&key) {
                    entry.close();
                    self.touch(key);
                }
            }
        }
    }

    /// A handle made room in its channel, or was dropped.
    fn on_attention(&mut self) {
        let mut keys = Vec::new();
        for (&key, entry) in &mut self.entries {
            if entry.abandon_if_dropped() || entry.is_holding() {
                keys.push(key);
            }
        }
        for key in keys {
            self.touch(key);
        }
    }

    /// Gives every connection whose deadline has passed its timeout.
    fn on_timers(&mut self) {
        let now = tokio::time::Instant::now().into_std();
        while let Some(&(at, key)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            if let Some(entry) = self.entries.get_mut(&key) {
                entry.deadline = None;
                entry.machine.handle_timeout(now);
                self.touch(key);
            }
        }
    }

    /// Files the connection's next deadline in the timer set.
    fn refile(&mut self, key: Key, deadline: Option<Instant>) {
        let Some(entry) = self.entries.get_mut(&key) else {
            return;
        };
        if deadline == entry.deadline {
            return;
        }
        if let Some(old) = entry.deadline {
            self.timers.remove(&(old, key));
        }
        if let Some(new) = deadline {
            self.timers.insert((new, key));
        }
        entry.deadline = deadline;
    }

    fn remove(&mut self, key: Key) {
        if let Some(mut entry) = self.entries.remove(&key) {
            if let Some(at) = entry.deadline {
                self.timers.remove(&(at, key));
            }
            entry.end(ConnectionEnded::DriverStopped);
            debug!(peer = %key.0, connection_id = key.1, "reliable connection removed");
        }
    }

    fn end_all(&mut self, why: ConnectionEnded) {
        for entry in self.entries.values_mut() {
            entry.end(why.clone());
        }
    }
}
