//! The signaling server's state in memory: the accounts, who is logged in (with the way to reach
//! each connection), what each peer announced, its presence and session partner, the
//! introductions waiting for an answer, and the count of failed log-ins per username.
//!
//! Every method is synchronous and runs under the server's one lock, so each request is one
//! atomic step; the notices a step produces are returned for the caller to queue, still under
//! the lock, so that every connection sees events in the order they happened.
//!
//! Policy worth knowing: when an asker goes offline (or logs out, or begins a session with
//! someone else) while its introduction waits, the introduction is withdrawn and its target is
//! told nothing; answering it later gets "no introduction from alice is waiting".

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use bytes::Bytes;
use protocol::p2p::secure::{KEY_LEN, Role, SessionKey};
use protocol::p2p::signal::{PeerEntry, PeerState, Presence, ServerMessage, Visibility};
use rand::Rng;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::accounts::{Account, Accounts};

/// Usernames whose failed log-ins are counted at once; past it, the lowest count is forgotten.
const MAX_FAILURE_RECORDS: usize = 4096;

/// How to reach one connection.
#[derive(Debug, Clone)]
pub(super) struct Link {
    /// The connection's number, unique for the server's life.
    pub conn: u64,
    /// Its queue of frames to write.
    pub outbox: mpsc::Sender<Bytes>,
    /// Cancelled to drop the connection (it stopped reading).
    pub dropped: CancellationToken,
}

/// A logged-in peer.
#[derive(Debug)]
struct Online {
    link: Link,
    address: Option<SocketAddr>,
    presence: Presence,
    partner: Option<String>,
}

impl Online {
    fn state(&self) -> PeerState {
        match (&self.partner, self.presence) {
            (Some(_), _) => PeerState::Connected,
            (None, Presence::Available) => PeerState::Available,
            (None, Presence::Away) => PeerState::Away,
        }
    }
}

/// An introduction waiting for its target's answer, keyed by its asker.
#[derive(Debug)]
struct Pending {
    target: String,
    id: u64,
    timer: CancellationToken,
}

/// A notice for one peer.
#[derive(Debug)]
pub(super) struct Notice {
    /// The peer to tell.
    pub to: String,
    /// What to tell it.
    pub message: ServerMessage,
}

/// The timer an introduction needs: when it fires, [`Registry::expire`]`(asker, id)`.
#[derive(Debug)]
pub(super) struct Timer {
    /// Who asked.
    pub asker: String,
    /// Which of its introductions.
    pub id: u64,
    /// Cancelled once the introduction is answered or withdrawn.
    pub cancel: CancellationToken,
}

/// Why a peer leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Leaving {
    /// Its connection ended.
    WentOffline,
    /// It logged out.
    LoggedOut,
}

impl Leaving {
    fn reason(self, name: &str) -> String {
        match self {
            Leaving::WentOffline => format!("{name} went offline"),
            Leaving::LoggedOut => format!("{name} logged out"),
        }
    }
}

/// A refusal, in words for the peer.
pub(super) type Refusal = String;

/// Everything the server knows.
pub(super) struct Registry {
    accounts: Accounts,
    online: BTreeMap<String, Online>,
    pending: HashMap<String, Pending>,
    failures: HashMap<String, u32>,
    next_pending: u64,
}

impl Registry {
    /// A registry of `accounts`, no one online.
    pub fn new(accounts: Accounts) -> Registry {
        Registry {
            accounts,
            online: BTreeMap::new(),
            pending: HashMap::new(),
            failures: HashMap::new(),
            next_pending: 0,
        }
    }

    /// Every account.
    pub fn accounts(&self) -> &Accounts {
        &self.accounts
    }

    /// Whether `name` has an account.
    pub fn has_account(&self, name: &str) -> bool {
        self.accounts.contains_key(name)
    }

    /// Adds an account; `false` if the name is taken.
    pub fn add_account(&mut self, name: &str, account: Account) -> bool {
        if self.has_account(name) {
            return false;
        }
        self.accounts.insert(name.to_owned(), account);
        true
    }

    /// Forgets an account (a sign-up that could not be saved).
    pub fn remove_account(&mut self, name: &str) {
        self.accounts.remove(name);
    }

    /// The password hash of `name`'s account.
    pub fn password_hash(&self, name: &str) -> Option<String> {
        self.accounts.get(name).map(|a| a.password.clone())
    }

    /// Counts one more failed log-in for `name`; the count so far.
    pub fn record_failure(&mut self, name: &str) -> u32 {
        if !self.failures.contains_key(name) && self.failures.len() >= MAX_FAILURE_RECORDS {
            self.forget_least_failed();
        }
        let count = self.failures.entry(name.to_owned()).or_insert(0);
        *count = count.saturating_add(1);
        *count
    }

    fn forget_least_failed(&mut self) {
        let least = self
            .failures
            .iter()
            .min_by_key(|(_, count)| **count)
            .map(|(name, _)| name.clone());
        if let Some(name) = least {
            self.failures.remove(&name);
        }
    }

    /// Logs `name` in on the connection `link`.
    pub fn log_in(&mut self, name: &str, link: Link) -> Result<(), Refusal> {
        if self.online.contains_key(name) {
            return Err(format!("{name} is already logged in elsewhere"));
        }
        self.failures.remove(name);
        let online = Online {
            link,
            address: None,
            presence: Presence::Available,
            partner: None,
        };
        self.online.insert(name.to_owned(), online);
        Ok(())
    }

    /// Takes `name` (logged in on connection `conn`) offline: its partner's session ends, its
    /// own introduction is withdrawn, the ones waiting for it are declined.
    pub fn log_out(&mut self, name: &str, conn: u64, leaving: Leaving) -> Vec<Notice> {
        if self.online.get(name).map(|o| o.link.conn) != Some(conn) {
            return Vec::new();
        }
        let Some(online) = self.online.remove(name) else {
            return Vec::new();
        };
        let mut notices = Vec::new();
        if let Some(partner) = online.partner {
            if let Some(other) = self.online.get_mut(&partner) {
                other.partner = None;
            }
            notices.push(session_ended(&partner, name, leaving.reason(name)));
        }
        self.withdraw(name);
        notices.extend(self.decline_waiting_for(name, &leaving.reason(name)));
        notices
    }

    /// Withdraws `asker`'s introduction, if one waits; its target.
    fn withdraw(&mut self, asker: &str) -> Option<String> {
        let pending = self.pending.remove(asker)?;
        pending.timer.cancel();
        Some(pending.target)
    }

    /// Declines every introduction waiting for `target`, with `reason`.
    fn decline_waiting_for(&mut self, target: &str, reason: &str) -> Vec<Notice> {
        let askers: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.target == target)
            .map(|(asker, _)| asker.clone())
            .collect();
        let mut notices = Vec::new();
        for asker in askers {
            self.withdraw(&asker);
            notices.push(declined(&asker, target, reason.to_owned()));
        }
        notices
    }

    /// Records where `name` takes datagrams.
    pub fn announce(&mut self, name: &str, address: SocketAddr) {
        if let Some(online) = self.online.get_mut(name) {
            online.address = Some(address);
        }
    }

    /// The peer `target` as `asker` may see it: online, announced and allowing `asker`.
    fn visible(&self, asker: &str, target: &str) -> Option<(&Online, SocketAddr)> {
        if asker == target {
            return None;
        }
        let online = self.online.get(target)?;
        let address = online.address?;
        let account = self.accounts.get(target)?;
        account
            .visibility
            .allows(asker)
            .then_some((online, address))
    }

    /// The peers `asker` may see, by username.
    pub fn list(&self, asker: &str) -> Vec<PeerEntry> {
        self.online
            .keys()
            .filter_map(|name| {
                let (online, _) = self.visible(asker, name)?;
                Some(PeerEntry {
                    username: name.clone(),
                    state: online.state(),
                })
            })
            .collect()
    }

    /// The state and address of `target`, if `asker` may see it.
    pub fn query(&self, asker: &str, target: &str) -> Result<(PeerState, SocketAddr), Refusal> {
        self.visible(asker, target)
            .map(|(online, address)| (online.state(), address))
            .ok_or_else(|| not_online(target))
    }

    /// Sets `name`'s presence.
    pub fn set_presence(&mut self, name: &str, presence: Presence) {
        if let Some(online) = self.online.get_mut(name) {
            online.presence = presence;
        }
    }

    /// Sets `name`'s visibility; the one it had.
    pub fn set_visibility(&mut self, name: &str, visibility: Visibility) -> Option<Visibility> {
        let account = self.accounts.get_mut(name)?;
        Some(std::mem::replace(&mut account.visibility, visibility))
    }

    /// `asker` asks to be introduced to `target`. On success, the notices (an introduction
    /// to the target, or a refusal on its behalf to the asker) and, for an introduction, its
    /// timer.
    pub fn connect(
        &mut self,
        asker: &str,
        target: &str,
    ) -> Result<(Notice, Option<Timer>), Refusal> {
        self.check_may_connect(asker, target)?;
        let (online, _) = self
            .visible(asker, target)
            .ok_or_else(|| not_online(target))?;
        if online.partner.is_some() {
            let reason = format!("{target} is in another session");
            return Ok((declined(asker, target, reason), None));
        }
        if online.presence == Presence::Away {
            let reason = format!("{target} is away");
            return Ok((declined(asker, target, reason), None));
        }
        let timer = self.add_pending(asker, target);
        let introduction = Notice {
            to: target.to_owned(),
            message: ServerMessage::Introduction {
                from: asker.to_owned(),
            },
        };
        Ok((introduction, Some(timer)))
    }

    /// Why `asker` may not ask for an introduction now, if it may not.
    fn check_may_connect(&self, asker: &str, target: &str) -> Result<(), Refusal> {
        if asker == target {
            return Err("you cannot connect to yourself".to_owned());
        }
        let me = self.online.get(asker).ok_or("log in first")?;
        if me.address.is_none() {
            return Err("announce your UDP address first".to_owned());
        }
        if let Some(partner) = &me.partner {
            return Err(format!("close your session with {partner} first"));
        }
        if let Some(pending) = self.pending.get(asker) {
            let waited = &pending.target;
            return Err(format!(
                "you are already waiting for an answer from {waited}"
            ));
        }
        Ok(())
    }

    fn add_pending(&mut self, asker: &str, target: &str) -> Timer {
        self.next_pending += 1;
        let id = self.next_pending;
        let cancel = CancellationToken::new();
        let pending = Pending {
            target: target.to_owned(),
            id,
            timer: cancel.clone(),
        };
        self.pending.insert(asker.to_owned(), pending);
        Timer {
            asker: asker.to_owned(),
            id,
            cancel,
        }
    }

    /// Removes the introduction from `asker` waiting for `me`, if there is one.
    fn take_pending(&mut self, me: &str, asker: &str) -> Result<(), Refusal> {
        match self.pending.get(asker) {
            Some(pending) if pending.target == me => {
                self.withdraw(asker);
                Ok(())
            }
            _ => Err(format!("no introduction from {asker} is waiting")),
        }
    }

    /// `me` accepts `asker`'s introduction: a session begins between them, with a fresh key
    /// and number; every other introduction to or from either of them is declined.
    pub fn accept(&mut self, me: &str, asker: &str) -> Result<Vec<Notice>, Refusal> {
        if let Some(partner) = self.online.get(me).and_then(|o| o.partner.as_ref()) {
            return Err(format!("close your session with {partner} first"));
        }
        self.take_pending(me, asker)?;
        let (Some(asker_address), Some(my_address)) = (self.address(asker), self.address(me))
        else {
            return Err(not_online(asker));
        };
        self.pair(me, asker);
        let (key, session) = fresh_session();
        let mut notices = vec![
            session_notice(asker, me, my_address, &key, session, Role::Initiator),
            session_notice(me, asker, asker_address, &key, session, Role::Acceptor),
        ];
        for (name, partner) in [(asker, me), (me, asker)] {
            let reason = format!("{name} is in another session");
            notices.extend(self.decline_waiting_for(name, &reason));
            if let Some(target) = self.withdraw(name) {
                let reason = format!("you began a session with {partner}");
                notices.push(declined(name, &target, reason));
            }
        }
        Ok(notices)
    }

    fn address(&self, name: &str) -> Option<SocketAddr> {
        self.online.get(name)?.address
    }

    fn pair(&mut self, a: &str, b: &str) {
        for (name, partner) in [(a, b), (b, a)] {
            if let Some(online) = self.online.get_mut(name) {
                online.partner = Some(partner.to_owned());
            }
        }
    }

    /// `me` declines `asker`'s introduction; the asker is told `reason`, or that `me` declined.
    pub fn decline(
        &mut self,
        me: &str,
        asker: &str,
        reason: Option<String>,
    ) -> Result<Notice, Refusal> {
        self.take_pending(me, asker)?;
        let reason = reason.unwrap_or_else(|| format!("{me} declined"));
        Ok(declined(asker, me, reason))
    }

    /// `me` closes its session; its partner is told.
    pub fn close(&mut self, me: &str) -> Result<Notice, Refusal> {
        let partner = self
            .online
            .get_mut(me)
            .and_then(|o| o.partner.take())
            .ok_or("you are not in a session")?;
        if let Some(online) = self.online.get_mut(&partner) {
            online.partner = None;
        }
        let reason = format!("{me} closed the session");
        Ok(session_ended(&partner, me, reason))
    }

    /// `me`'s session partner, if it has one.
    pub fn partner(&self, me: &str) -> Option<&str> {
        self.online.get(me)?.partner.as_deref()
    }

    /// The introduction `id` of `asker` went unanswered: the asker is told, if it still waits.
    pub fn expire(&mut self, asker: &str, id: u64) -> Option<Notice> {
        if self.pending.get(asker).map(|p| p.id) != Some(id) {
            return None;
        }
        let target = self.withdraw(asker)?;
        let reason = format!("{target} did not answer");
        Some(declined(asker, &target, reason))
    }

    /// How to reach `name`'s connection, if it is logged in.
    pub fn link(&self, name: &str) -> Option<&Link> {
        self.online.get(name).map(|o| &o.link)
    }

    /// How many peers are logged in.
    pub fn online_count(&self) -> usize {
        self.online.len()
    }
}

/// The refusal for a peer that is offline, unannounced or hidden from the asker: the same
/// words for all three, so hiding does not leak.
pub(super) fn not_online(name: &str) -> Refusal {
    format!("no peer named {name} is online")
}

fn declined(asker: &str, target: &str, reason: String) -> Notice {
    Notice {
        to: asker.to_owned(),
        message: ServerMessage::Declined {
            peer: target.to_owned(),
            reason,
        },
    }
}

fn session_ended(to: &str, peer: &str, reason: String) -> Notice {
    Notice {
        to: to.to_owned(),
        message: ServerMessage::SessionEnded {
            peer: peer.to_owned(),
            reason,
        },
    }
}

fn session_notice(
    to: &str,
    peer: &str,
    address: SocketAddr,
    key: &SessionKey,
    session: u32,
    role: Role,
) -> Notice {
    Notice {
        to: to.to_owned(),
        message: ServerMessage::Session {
            peer: peer.to_owned(),
            address,
            key: key.clone(),
            session,
            role,
        },
    }
}

/// A fresh session key and number, from the thread's CSPRNG.
fn fresh_session() -> (SessionKey, u32) {
    let mut rng = rand::rng();
    let mut bytes = [0u8; KEY_LEN];
    rng.fill(&mut bytes);
    (SessionKey::from_bytes(bytes), rng.random())
}
