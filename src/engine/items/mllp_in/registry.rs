//! The live connections of one listener, so that a new connection can
//! always be taken: when the listener or the peer is at its limit, an idle
//! connection is closed to make room for it, rather than the new one
//! being refused.
//!
//! Refusing the newcomer, as a plain connection limit does, hands the
//! listener to whoever connects first: a peer that opens enough silent
//! connections locks every sender out for as long as it holds them
//! (invariant 4). Closing an idle connection instead keeps the listener
//! open to a sender that delivers messages, at the expense of the
//! connections that deliver nothing.
//!
//! "Idle" is the time since a connection's last complete frame, or since
//! it was accepted if it has had none, so bytes trickled one at a time
//! without ever finishing a message do not count as activity.
//!
//! A full listener closes, first, a connection that has not delivered a
//! message yet (silent, trickling bytes, or stuck in a TLS handshake),
//! taken from the peer address that has the most of them, the longest idle
//! of that address's; between addresses with as many, the one whose oldest
//! is oldest, so with one connection per address this is simply the
//! longest idle. Once every connection has delivered, the longest idle
//! goes. So a flood from a few addresses, however fast it reconnects,
//! pushes out its own connections, and not a sender that has just
//! connected and whose first message is on its way, nor one that delivers.
//!
//! A peer at its own limit loses its own longest-idle connection,
//! delivered or not, so a sender whose old connections went half-open (a
//! firewall dropped them without a word) is not locked out by its ghosts.
//!
//! Closing is a signal: the connection's task closes its socket when it is
//! next waiting for bytes. A connection in the middle of storing a message
//! finishes it and sends the ACK first, so no acknowledged message is lost
//! and none is stored without its ACK having been attempted.
//!
//! Memory is bounded by the limits: a connection is admitted only after
//! room was made for it, and its entries go when it is closed or its task
//! ends. Every choice is a lookup in an ordered set, so a listener with a
//! high limit under a flood spends no more per connection than a small one.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::sync::LockExt as _;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The live connections of a listener and its limits.
#[derive(Debug)]
pub(super) struct Registry {
    max_connections: usize,
    max_per_peer: usize,
    inner: Mutex<Inner>,
}

/// A connection by idleness: `(last activity, id)`, longest idle first.
type Idle = (Instant, u64);

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    live: HashMap<u64, Live>,
    peers: HashMap<IpAddr, Peer>,
    /// The addresses that have connections not yet delivered, ranked by
    /// `(how many, oldest first, address)`: the last loses one first.
    crowded: BTreeSet<(usize, Reverse<Instant>, IpAddr)>,
    /// The connections that have delivered a message, longest idle first.
    delivered: BTreeSet<Idle>,
}

/// The live connections of one peer address.
#[derive(Debug, Default)]
struct Peer {
    /// All of them, longest idle first.
    all: BTreeSet<Idle>,
    /// Those that have not delivered a message yet, longest idle first.
    waiting: BTreeSet<Idle>,
}

impl Peer {
    fn rank(&self, ip: IpAddr) -> Option<(usize, Reverse<Instant>, IpAddr)> {
        self.waiting.first().map(|&(oldest, _)| (self.waiting.len(), Reverse(oldest), ip))
    }
}

#[derive(Debug)]
struct Live {
    peer: SocketAddr,
    /// When its last complete frame arrived, or when it was accepted.
    active: Instant,
    delivered: bool,
    close: CancellationToken,
}

/// A connection closed to make room for a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Evicted {
    /// Whose connection it was.
    pub(super) peer: SocketAddr,
    /// How long it had been idle.
    pub(super) idle: Duration,
    /// Whether it had delivered a message.
    pub(super) delivered: bool,
    /// Which limit the new connection would have passed.
    pub(super) limit: Limit,
}

/// The limit a new connection met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Limit {
    /// `max_connections_per_peer`: the peer's own connections.
    Peer(usize),
    /// `max_connections`: the listener's.
    Listener(usize),
}

impl Registry {
    /// Limits below 1 are taken as 1.
    pub(super) fn new(max_connections: usize, max_per_peer: usize) -> Arc<Self> {
        Arc::new(Self {
            max_connections: max_connections.max(1),
            max_per_peer: max_per_peer.max(1),
            inner: Mutex::new(Inner::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock_unpoisoned()
    }

    /// Takes a new connection from `peer`, accepted at `now`, closing what
    /// must go to make room for it.
    pub(super) fn admit(self: &Arc<Self>, peer: SocketAddr, now: Instant) -> (Ticket, Vec<Evicted>) {
        let mut inner = self.lock();
        let mut evicted = Vec::new();
        loop {
            let own = inner.peers.get(&peer.ip()).filter(|own| own.all.len() >= self.max_per_peer);
            let Some(&(_, id)) = own.and_then(|own| own.all.first()) else { break };
            evicted.extend(inner.evict(id, now, Limit::Peer(self.max_per_peer)));
        }
        while inner.live.len() >= self.max_connections {
            let Some(id) = inner.listener_victim() else { break };
            evicted.extend(inner.evict(id, now, Limit::Listener(self.max_connections)));
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let close = CancellationToken::new();
        inner.insert(id, Live { peer, active: now, delivered: false, close: close.clone() });
        (Ticket { registry: self.clone(), id, close }, evicted)
    }

    /// How many connections are live.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().live.len()
    }
}

impl Inner {
    /// The connection a full listener closes.
    fn listener_victim(&self) -> Option<u64> {
        match self.crowded.last() {
            Some(&(_, _, ip)) => self.peers.get(&ip)?.waiting.first().map(|&(_, id)| id),
            None => self.delivered.first().map(|&(_, id)| id),
        }
    }

    /// Changes what is known of `ip`'s connections, keeping its rank.
    fn with_peer(&mut self, ip: IpAddr, change: impl FnOnce(&mut Peer)) {
        let peer = self.peers.entry(ip).or_default();
        if let Some(rank) = peer.rank(ip) {
            self.crowded.remove(&rank);
        }
        change(peer);
        match peer.rank(ip) {
            Some(rank) => {
                self.crowded.insert(rank);
            }
            None if peer.all.is_empty() => {
                self.peers.remove(&ip);
            }
            None => {}
        }
    }

    /// Files a connection under its peer and its state.
    fn file(&mut self, id: u64, peer: IpAddr, active: Instant, delivered: bool) {
        self.with_peer(peer, |own| {
            own.all.insert((active, id));
            if !delivered {
                own.waiting.insert((active, id));
            }
        });
        if delivered {
            self.delivered.insert((active, id));
        }
    }

    /// Undoes [`file`](Self::file).
    fn unfile(&mut self, id: u64, peer: IpAddr, active: Instant, delivered: bool) {
        self.with_peer(peer, |own| {
            own.all.remove(&(active, id));
            own.waiting.remove(&(active, id));
        });
        if delivered {
            self.delivered.remove(&(active, id));
        }
    }

    fn insert(&mut self, id: u64, live: Live) {
        self.file(id, live.peer.ip(), live.active, live.delivered);
        self.live.insert(id, live);
    }

    /// Forgets a connection; returns it if it was live.
    fn remove(&mut self, id: u64) -> Option<Live> {
        let live = self.live.remove(&id)?;
        self.unfile(id, live.peer.ip(), live.active, live.delivered);
        Some(live)
    }

    fn evict(&mut self, id: u64, now: Instant, limit: Limit) -> Option<Evicted> {
        let live = self.remove(id)?;
        live.close.cancel();
        Some(Evicted {
            peer: live.peer,
            idle: now.saturating_duration_since(live.active),
            delivered: live.delivered,
            limit,
        })
    }
}

/// A connection's place in the [`Registry`]; dropping it gives the place
/// up.
#[derive(Debug)]
pub(super) struct Ticket {
    registry: Arc<Registry>,
    id: u64,
    close: CancellationToken,
}

impl Ticket {
    /// Records a complete frame: the connection is not idle. `delivered`
    /// says that it was a message (not a frame too large to read), which
    /// protects the connection from floods of connections that deliver
    /// nothing.
    pub(super) fn touch(&self, delivered: bool) {
        self.touch_at(delivered, Instant::now());
    }

    fn touch_at(&self, delivered: bool, now: Instant) {
        let mut inner = self.registry.lock();
        let Some(mut live) = inner.remove(self.id) else { return };
        live.active = now;
        live.delivered |= delivered;
        inner.insert(self.id, live);
    }

    /// Resolves once the connection was closed to make room for another.
    pub(super) async fn evicted(&self) {
        self.close.cancelled().await;
    }

    /// Whether the connection was closed to make room for another.
    #[cfg(test)]
    fn is_evicted(&self) -> bool {
        self.close.is_cancelled()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.registry.lock().remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(last: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, last], port))
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_full_listener_closes_the_connection_idle_the_longest() {
        let registry = Registry::new(3, 10);
        let t0 = Instant::now();
        let (a, _) = registry.admit(peer(1, 1), t0);
        let (b, _) = registry.admit(peer(2, 1), t0 + MS);
        let (c, _) = registry.admit(peer(3, 1), t0 + 2 * MS);
        let (d, evicted) = registry.admit(peer(4, 1), t0 + 10 * MS);
        assert_eq!(evicted, [Evicted { peer: peer(1, 1), idle: 10 * MS, delivered: false, limit: Limit::Listener(3) }]);
        assert!(a.is_evicted() && !b.is_evicted() && !c.is_evicted() && !d.is_evicted());
        assert_eq!(registry.len(), 3);
        // The next one closes the next oldest.
        let (_e, evicted) = registry.admit(peer(5, 1), t0 + 11 * MS);
        assert_eq!(evicted[0].peer, peer(2, 1));
        assert!(b.is_evicted() && !c.is_evicted());
    }

    #[test]
    fn a_connection_that_delivered_goes_after_every_one_that_did_not() {
        let registry = Registry::new(3, 10);
        let t0 = Instant::now();
        let (sender, _) = registry.admit(peer(1, 1), t0);
        sender.touch_at(true, t0 + MS);
        let (_silent, _) = registry.admit(peer(2, 1), t0 + 2 * MS);
        let (_slow, _) = registry.admit(peer(3, 1), t0 + 3 * MS);
        // The sender is idle longer than every other, but it has delivered.
        for n in 0..100u16 {
            let (_flood, evicted) = registry.admit(peer(4, n), t0 + (4 + u32::from(n)) * MS);
            assert!(evicted.iter().all(|e| e.peer != peer(1, 1)), "{evicted:?}");
            assert!(!sender.is_evicted());
        }
        // Once only connections that delivered are left, it goes first.
        let mut held = Vec::new();
        for n in 0..3u16 {
            let at = t0 + Duration::from_secs(1) + u32::from(n) * MS;
            let (ticket, _) = registry.admit(peer(5, n), at);
            ticket.touch_at(true, at);
            held.push(ticket);
        }
        assert!(sender.is_evicted());
        assert!(held.iter().all(|t| !t.is_evicted()));
    }

    #[test]
    fn a_peer_at_its_limit_loses_its_own_longest_idle_connection() {
        let registry = Registry::new(100, 2);
        let t0 = Instant::now();
        let (first, _) = registry.admit(peer(1, 1), t0);
        let (second, _) = registry.admit(peer(1, 2), t0 + MS);
        let (other, _) = registry.admit(peer(2, 1), t0 + 2 * MS);
        // The first connection delivers after the second was accepted: the
        // second is now the peer's longest idle, though it never delivered.
        first.touch_at(true, t0 + 3 * MS);
        let (third, evicted) = registry.admit(peer(1, 3), t0 + 4 * MS);
        assert_eq!(evicted, [Evicted { peer: peer(1, 2), idle: 3 * MS, delivered: false, limit: Limit::Peer(2) }]);
        assert!(second.is_evicted() && !first.is_evicted() && !third.is_evicted() && !other.is_evicted());
        assert_eq!(registry.len(), 3);
    }

    #[test]
    fn nothing_grows_past_the_limits_and_dropped_tickets_free_their_place() {
        let registry = Registry::new(50, 3);
        let t0 = Instant::now();
        let mut held = std::collections::VecDeque::new();
        for n in 0..10_000u32 {
            let at = t0 + n * MS;
            let (ticket, _) = registry.admit(peer((n % 40) as u8, (n % 60_000) as u16), at);
            if n % 3 == 0 {
                ticket.touch_at(n % 2 == 0, at);
            }
            held.push_back(ticket);
            if held.len() > 80 {
                held.pop_front();
            }
            assert!(registry.len() <= 50);
            let inner = registry.lock();
            assert!(inner.peers.values().all(|own| own.all.len() <= 3 && !own.all.is_empty()));
            assert_eq!(inner.peers.values().map(|own| own.all.len()).sum::<usize>(), inner.live.len());
            let waiting: usize = inner.peers.values().map(|own| own.waiting.len()).sum();
            assert_eq!(waiting + inner.delivered.len(), inner.live.len());
            let ranked: usize = inner.crowded.iter().map(|&(n, _, _)| n).sum();
            assert_eq!(ranked, waiting);
        }
        held.clear();
        assert_eq!(registry.len(), 0);
        let inner = registry.lock();
        assert!(inner.peers.is_empty() && inner.crowded.is_empty() && inner.delivered.is_empty());
    }

    #[test]
    fn a_full_listener_takes_from_the_address_with_the_most_connections_first() {
        let registry = Registry::new(12, 10);
        let t0 = Instant::now();
        // A sender connects first; a flood from two addresses follows.
        let (sender, _) = registry.admit(peer(1, 1), t0);
        let mut flood = Vec::new();
        for n in 0..11u16 {
            let from = if n < 8 { 2 } else { 3 };
            flood.push(registry.admit(peer(from, n), t0 + (1 + u32::from(n)) * MS).0);
        }
        // Full: 127.0.0.2 has 8 connections, 127.0.0.3 three, the sender
        // (idle the longest, and yet to deliver) one.
        for n in 0..20u16 {
            let (ticket, evicted) = registry.admit(peer(3, 100 + n), t0 + (20 + u32::from(n)) * MS);
            assert_eq!(evicted.len(), 1);
            assert_ne!(evicted[0].peer.ip(), peer(1, 1).ip(), "round {n}: {evicted:?}");
            flood.push(ticket);
        }
        assert!(!sender.is_evicted());
        // The two addresses took turns losing connections until they held
        // about as many.
        let inner = registry.lock();
        let count = |from: u8| inner.peers.get(&peer(from, 0).ip()).map_or(0, |own| own.all.len());
        assert_eq!((count(1), count(2), count(3)), (1, 5, 6));
    }

    #[test]
    fn an_evicted_ticket_ignores_touches_and_its_drop_keeps_the_newcomer() {
        let registry = Registry::new(1, 1);
        let t0 = Instant::now();
        let (old, _) = registry.admit(peer(1, 1), t0);
        let (new, evicted) = registry.admit(peer(1, 2), t0 + MS);
        assert_eq!(evicted.len(), 1);
        old.touch(true);
        drop(old);
        assert_eq!(registry.len(), 1);
        assert!(!new.is_evicted());
    }
}
