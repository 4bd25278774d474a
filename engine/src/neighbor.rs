//! Next-hop resolution: which Ethernet address an IPv4 packet must be sent to (RFC 826 ARP),
//! for the connections the engine opens itself (a proxy's backend side), where no received
//! frame tells us the peer's MAC.
//!
//! The table is sans-IO and bounded: its capacity is fixed when it is built (no growth, no
//! allocation after `new`), time is passed in, and it never sends or holds a packet itself. The
//! caller asks [`NeighborTable::lookup`] before sending, and the answer ([`Resolve`]) says what
//! to do: send to a MAC, hold the packet (the table counts it against a per-entry limit), send
//! an ARP request, or drop. [`NeighborTable::poll`] hands out the timer work (request
//! retransmissions, unicast re-probes, failures), [`NeighborTable::learn`] takes every ARP
//! packet heard, [`NeighborTable::confirm`] takes the upper layer's proof that a neighbour is
//! alive.
//!
//! The states and their rules follow the Linux neighbour subsystem (`net/core/neighbour.c`,
//! `net/ipv4/arp.c`; the NUD states, which come from RFC 4861 §7.3.2 Neighbor Unreachability
//! Detection applied to ARP), with the request pacing RFC 1122 §2.3.2.1 requires:
//!
//! ```text
//! state       event                                   next state, what the caller does
//! (none)      lookup                                  INCOMPLETE: send a broadcast request, hold
//! (none)      ARP heard (learn_unsolicited, room)     STALE
//! INCOMPLETE  lookup                                  hold (up to queue_limit), else drop
//! INCOMPLETE  unicast reply | other ARP heard         REACHABLE | STALE: send what is held
//! INCOMPLETE  timer, fewer than max_requests sent     retransmit; the wait doubles (capped)
//! INCOMPLETE  timer, max_requests sent                FAILED: drop what is held
//! REACHABLE   lookup                                  send to the cached MAC
//! REACHABLE   timer (reachable)                       STALE
//! STALE       lookup                                  DELAY: send to the cached MAC
//! STALE       timer (stale_gc, unused)                freed
//! DELAY       confirm | unicast reply                 REACHABLE
//! DELAY       timer (delay_first_probe)               PROBE: unicast request to the cached MAC
//! PROBE       lookup                                  send to the cached MAC
//! PROBE       confirm | unicast reply                 REACHABLE
//! PROBE       timer, fewer | max_probes sent          unicast request again | FAILED
//! FAILED      lookup                                  drop (counted)
//! FAILED      ARP heard                               STALE | REACHABLE: the host is back
//! FAILED      timer (failed_hold)                     freed
//! with a MAC  another MAC inside locktime             ignored, unless an announcement
//! ```
//!
//! Deliberate differences from Linux: Linux restarts resolution of a FAILED entry on the next
//! packet; here a FAILED entry holds callers down for `failed_hold` (FreeBSD's `arpt_down`),
//! unless the host speaks again. Linux drops the oldest held packet on overflow; here the
//! caller holds the packets, so the newest is refused. REACHABLE lasts exactly `reachable`
//! (Linux randomises it by 0.5–1.5×): the table stays deterministic, and a caller that wants
//! the jitter can vary the configuration per worker.
//!
//! Cost: `lookup`, `learn` and `confirm` are an open-addressing probe (linear probing, at
//! most half full, backward-shift deletion so there are no tombstones). `poll` scans the
//! table only when the earliest deadline has come; making room in a full table scans it once.

use std::net::Ipv4Addr;

use crate::time::{Duration, Instant};
use crate::wire::arp::{ArpOp, ArpRepr, FRAME_LEN};
use crate::wire::ethernet::{self, emit_ethernet_header, MacAddr};
use crate::wire::WireError;

/// Tunables, named after the Linux `net.ipv4.neigh.*` sysctls they mirror.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct NeighborConfig {
    /// Entries the table holds at most (Linux `gc_thresh3`, the hard limit). Fixed at `new`.
    pub capacity: usize,
    /// Packets that may wait on one unresolved entry; a further one is dropped (counted).
    /// Linux `unres_qlen` (the historical default was 3; today a byte limit of ~100 packets).
    /// For a proxy a burst of backend SYNs waits on one gateway, so the default is larger.
    pub queue_limit: u16,
    /// Broadcast requests sent for an INCOMPLETE entry before it FAILS (Linux `mcast_solicit`).
    pub max_requests: u8,
    /// Unicast probes sent from PROBE before the entry FAILS (Linux `ucast_solicit`).
    pub max_probes: u8,
    /// Wait after the first request; it doubles after each further one (Linux `retrans_time`;
    /// RFC 1122 §2.3.2.1: at most about one request per second per destination).
    pub retrans: Duration,
    /// Cap of the doubling wait (the exponential backoff RFC 7048 brought to neighbour
    /// solicitations).
    pub retrans_max: Duration,
    /// How long a confirmed entry stays REACHABLE (Linux `base_reachable_time`).
    pub reachable: Duration,
    /// How long a STALE entry in use waits for an upper-layer confirmation before it is
    /// re-probed (Linux `delay_first_probe_time`).
    pub delay_first_probe: Duration,
    /// How long an unused STALE entry is kept before it is freed (Linux `gc_stale_time`).
    pub stale_gc: Duration,
    /// How long a FAILED entry makes lookups drop before resolution may start again: the
    /// hold-down of FreeBSD's `net.link.ether.inet.arpt_down`, so a dead next hop costs a
    /// request every few seconds, not one per packet (RFC 1122 §2.3.2.1 "prevent ARP flooding").
    pub failed_hold: Duration,
    /// After an entry's address is set, a different address for it is ignored for this long
    /// unless it comes in an announcement (Linux `locktime`: "if several different ARP replies
    /// follow back-to-back, use the first one", e.g. several proxy-ARP agents answering).
    pub locktime: Duration,
    /// Create (STALE) entries from ARP heard that we did not ask for: requests from other
    /// hosts, gratuitous announcements. Linux leaves this off (`arp_accept=0`) and only updates
    /// existing entries; on for flowtwin because a standby that takes over then already knows
    /// the neighbours it heard, and its first packets need no resolution. Never evicts.
    pub learn_unsolicited: bool,
}

impl Default for NeighborConfig {
    fn default() -> Self {
        NeighborConfig {
            capacity: 1024,
            queue_limit: 64,
            max_requests: 3,
            max_probes: 3,
            retrans: Duration::from_secs(1),
            retrans_max: Duration::from_secs(4),
            reachable: Duration::from_secs(30),
            delay_first_probe: Duration::from_secs(5),
            stale_gc: Duration::from_secs(60),
            failed_hold: Duration::from_secs(20),
            locktime: Duration::from_secs(1),
            learn_unsolicited: true,
        }
    }
}

/// The state of an entry (Linux NUD_* names).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// A broadcast request is out; packets wait (counted against `queue_limit`).
    Incomplete,
    /// The address was confirmed (a unicast reply, or the upper layer) less than `reachable`
    /// ago: used without question.
    Reachable,
    /// The address is known but unconfirmed (heard, or REACHABLE expired): still used, but
    /// the first use starts re-confirmation.
    Stale,
    /// In use while STALE: waiting `delay_first_probe` for the upper layer to confirm.
    Delay,
    /// Unicast requests to the cached address are out; it is still used meanwhile.
    Probe,
    /// Resolution failed: lookups drop until `failed_hold` ends.
    Failed,
}

/// What the caller does with the packet it wants to send to a next hop.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Resolve {
    /// Send it to this MAC.
    Known(MacAddr),
    /// Resolution is under way: hold the packet (it is counted) until `learn` returns
    /// [`Learned::Resolved`] or `poll` returns [`Due::Failed`] for this address.
    Pending,
    /// Hold the packet (it is counted) and send a broadcast ARP request for the address now
    /// ([`emit_request`] with `MacAddr::BROADCAST`); the table counted the request as sent.
    SendRequest,
    /// Drop it: resolution failed less than `failed_hold` ago.
    Failed,
    /// Drop it: `queue_limit` packets already wait on this address.
    QueueFull,
    /// Drop it: the table is full of entries in use and none could be freed.
    TableFull,
}

impl Resolve {
    /// The packet must be dropped (the table has counted why).
    pub fn is_drop(self) -> bool {
        matches!(self, Resolve::Failed | Resolve::QueueFull | Resolve::TableFull)
    }
}

/// How much an ARP packet heard proves about its sender (Linux `arp_process`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Evidence {
    /// A reply sent unicast to us: the sender heard us and we heard it, two-way reachability
    /// (RFC 826's answer to our question) → REACHABLE.
    Reply,
    /// An announcement, spa == tpa (RFC 5227 §3 "gratuitous ARP"): the owner says where its
    /// address now is. Overrides `locktime` (a takeover moved the address) → STALE.
    Announcement,
    /// Anything else: a request from the sender, a broadcast reply. One-way evidence
    /// ("broadcast replies and request packets do not assert neighbour reachability") → STALE.
    Heard,
}

impl Evidence {
    /// Classifies a parsed ARP packet that arrived in a frame sent to `eth_dst`.
    pub fn of(arp: &ArpRepr, eth_dst: MacAddr) -> Evidence {
        if arp.sender_ip == arp.target_ip {
            Evidence::Announcement
        } else if arp.op == ArpOp::Reply && !eth_dst.is_multicast() {
            Evidence::Reply
        } else {
            Evidence::Heard
        }
    }
}

/// A mapping one worker heard in ARP, for the neighbour tables of the other workers of its
/// engine (ARP reaches one worker only; `Stack::take_heard_neighbor` hands these out and
/// `Stack::learn_neighbor` takes them in). The evidence travels with it: a unicast reply
/// to one worker's request proves two-way reachability for the whole engine (every worker
/// sends from the same VIP MACs). No time: the workers' clocks are not one time base, and the
/// receiver applies it within a loop pass at its own `now`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Heard {
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    pub evidence: Evidence,
}

/// What [`NeighborTable::learn`] did with an ARP packet.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Learned {
    /// An INCOMPLETE entry got its address: send the `waiting` packets held for this IP to `mac`.
    Resolved { mac: MacAddr, waiting: u16 },
    /// A new STALE entry (unsolicited, `learn_unsolicited`).
    Created,
    /// An existing entry changed address or state.
    Updated,
    /// Nothing new (the same address, no stronger evidence).
    Unchanged,
    /// Not used: a bad sender (unspecified, broadcast or multicast IP; group or zero MAC), a
    /// different address inside `locktime`, or no room / no wish to create an entry.
    Ignored,
}

/// Timer work handed out by [`NeighborTable::poll`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Due {
    /// Send an ARP request for `ip` with Ethernet destination `dst`: broadcast while
    /// INCOMPLETE, the cached address when probing (RFC 1122 §2.3.2.1 "unicast poll").
    Request { ip: Ipv4Addr, dst: MacAddr },
    /// Resolution of `ip` failed: drop the `waiting` packets held for it (0 when a PROBE
    /// failed: its packets were sent to the old address).
    Failed { ip: Ipv4Addr, waiting: u16 },
}

/// Counters (plain integers: one table per worker, no sharing).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct NeighborCounters {
    /// Broadcast requests, first ones and retransmissions.
    pub requests_sent: u64,
    /// Unicast re-probes of STALE entries in use.
    pub probes_sent: u64,
    /// Unicast replies that confirmed an entry.
    pub replies_learned: u64,
    /// Announcements and other ARP heard that created or updated an entry.
    pub passive_learned: u64,
    /// Entries whose address changed.
    pub mac_changes: u64,
    /// Different addresses ignored inside `locktime`.
    pub locktime_ignored: u64,
    /// Upper-layer confirmations that made an entry REACHABLE.
    pub confirmations: u64,
    /// Lookups answered with a MAC.
    pub hits: u64,
    /// Lookups answered without one (every other outcome; the drops below are among them).
    pub misses: u64,
    /// Packets dropped because the table was full.
    pub table_full_drops: u64,
    /// Packets dropped because `queue_limit` packets already waited.
    pub queue_overflow_drops: u64,
    /// Packets dropped during a FAILED hold-down.
    pub failed_drops: u64,
    /// Resolutions (INCOMPLETE or PROBE) that ran out of requests.
    pub resolution_failures: u64,
    /// Entries freed to make room for a new resolution.
    pub evictions: u64,
    /// Entries freed by their timers (unused STALE, FAILED hold-down over).
    pub expired: u64,
}

#[derive(Copy, Clone, Debug)]
struct Entry {
    ip: Ipv4Addr,
    mac: MacAddr,
    state: State,
    /// When the state's timer fires: retransmit / fail (INCOMPLETE, PROBE), go STALE
    /// (REACHABLE), be freed (STALE, FAILED), start probing (DELAY).
    deadline: Instant,
    /// When the address was last set (for `locktime`).
    updated: Instant,
    /// When a lookup last used the entry (least recently used is evicted first).
    used: Instant,
    /// Requests sent in the current INCOMPLETE or PROBE round.
    tries: u8,
    /// Packets the caller holds for this address.
    waiting: u16,
}

const NEVER: Instant = Instant(u64::MAX);

/// The neighbour table of one worker. See the module documentation.
pub struct NeighborTable {
    cfg: NeighborConfig,
    slots: Box<[Option<Entry>]>,
    /// log2 of the slot count.
    bits: u32,
    len: usize,
    /// Never later than the earliest deadline of any entry (`NEVER`: none).
    earliest: Instant,
    counters: NeighborCounters,
}

impl NeighborTable {
    /// A table for `cfg.capacity` entries (at least 1, at most 2^20), allocated once here.
    /// `queue_limit`, `max_requests` and `max_probes` are raised to at least 1.
    pub fn new(mut cfg: NeighborConfig) -> NeighborTable {
        cfg.capacity = cfg.capacity.clamp(1, 1 << 20);
        cfg.queue_limit = cfg.queue_limit.max(1);
        cfg.max_requests = cfg.max_requests.max(1);
        cfg.max_probes = cfg.max_probes.max(1);
        // At most half full keeps linear-probing chains short.
        let nslots = (cfg.capacity * 2).next_power_of_two();
        NeighborTable {
            cfg,
            slots: vec![None; nslots].into_boxed_slice(),
            bits: nslots.trailing_zeros(),
            len: 0,
            earliest: NEVER,
            counters: NeighborCounters::default(),
        }
    }

    pub fn config(&self) -> &NeighborConfig {
        &self.cfg
    }

    pub fn counters(&self) -> &NeighborCounters {
        &self.counters
    }

    /// Entries in use.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.cfg.capacity
    }

    /// The state and cached address of `ip`'s entry, if it has one (the MAC is zero while
    /// INCOMPLETE). Does not count as a use.
    pub fn get(&self, ip: Ipv4Addr) -> Option<(State, MacAddr)> {
        self.find(ip).and_then(|i| self.slots[i]).map(|e| (e.state, e.mac))
    }

    /// Where a packet for next hop `ip` goes. Counts a hit or a miss, and counts the packet
    /// against the entry's queue when the answer is to hold it.
    pub fn lookup(&mut self, now: Instant, ip: Ipv4Addr) -> Resolve {
        let answer = self.resolve(now, ip);
        match answer {
            Resolve::Known(_) => self.counters.hits += 1,
            _ => self.counters.misses += 1,
        }
        match answer {
            Resolve::Failed => self.counters.failed_drops += 1,
            Resolve::QueueFull => self.counters.queue_overflow_drops += 1,
            Resolve::TableFull => self.counters.table_full_drops += 1,
            _ => {}
        }
        answer
    }

    fn resolve(&mut self, now: Instant, ip: Ipv4Addr) -> Resolve {
        // Addresses that need no resolution (RFC 1122 §3.3.6 limited broadcast; RFC 1112 §6.4
        // maps a group address onto 01:00:5e plus its low 23 bits).
        if ip.is_broadcast() {
            return Resolve::Known(MacAddr::BROADCAST);
        }
        if ip.is_multicast() {
            return Resolve::Known(multicast_mac(ip));
        }
        if ip.is_unspecified() {
            // Nobody answers for 0.0.0.0 (RFC 1122 §3.2.1.3: "this host", a source only).
            return Resolve::Failed;
        }
        let Some(i) = self.find(ip) else {
            if self.len == self.cfg.capacity && !self.evict() {
                return Resolve::TableFull;
            }
            let e = self.fresh_incomplete(now, ip);
            self.insert(e);
            return Resolve::SendRequest;
        };
        let cfg = self.cfg;
        let Some(mut e) = self.slots[i] else {
            return Resolve::TableFull; // unreachable: `find` returns occupied slots only
        };
        e.used = now;
        let answer = match e.state {
            State::Reachable if now < e.deadline => Resolve::Known(e.mac),
            // First use of an unconfirmed address: use it, and give the upper layer
            // `delay_first_probe` to confirm it before probing (Linux NUD_STALE → NUD_DELAY).
            State::Reachable | State::Stale => {
                e.state = State::Delay;
                e.deadline = now + cfg.delay_first_probe;
                Resolve::Known(e.mac)
            }
            State::Delay | State::Probe => Resolve::Known(e.mac),
            State::Incomplete if e.waiting < cfg.queue_limit => {
                e.waiting += 1;
                Resolve::Pending
            }
            // Linux drops the oldest held packet (`__skb_dequeue(&neigh->arp_queue)`); the
            // caller holds ours, so the newest is refused instead. For TCP the two are alike:
            // the newest is a retransmission of what waits.
            State::Incomplete => Resolve::QueueFull,
            State::Failed if now < e.deadline => Resolve::Failed,
            State::Failed => {
                // The hold-down is over (its timer has not run yet): resolve again.
                e = self.fresh_incomplete(now, ip);
                Resolve::SendRequest
            }
        };
        self.earliest = self.earliest.min(e.deadline);
        self.slots[i] = Some(e);
        answer
    }

    /// Takes an ARP packet heard from (`ip`, `mac`) (the sender fields, already checked
    /// against the Ethernet source by the caller). RFC 826 "Packet Reception": the sender's
    /// mapping is merged into an existing entry whatever the packet asked; a new entry is made
    /// only if `learn_unsolicited` (see there) and there is a free slot.
    pub fn learn(&mut self, now: Instant, ip: Ipv4Addr, mac: MacAddr, ev: Evidence) -> Learned {
        // A host never claims these (RFC 5227 probes carry spa 0.0.0.0; IEEE 802: a group
        // address is never a station's own).
        if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || mac.is_multicast() || mac == MacAddr::ZERO {
            return Learned::Ignored;
        }
        let cfg = self.cfg;
        let confirmed = ev == Evidence::Reply;
        let Some(i) = self.find(ip) else {
            if !cfg.learn_unsolicited || self.len == cfg.capacity {
                return Learned::Ignored;
            }
            self.insert(Entry {
                ip,
                mac,
                state: State::Stale,
                deadline: now + cfg.stale_gc,
                updated: now,
                used: now,
                tries: 0,
                waiting: 0,
            });
            self.counters.passive_learned += 1;
            return Learned::Created;
        };
        let Some(e) = self.slots[i].as_mut() else {
            return Learned::Ignored; // unreachable: `find` returns occupied slots only
        };
        let was = e.state;
        let changed = e.mac != mac;
        if matches!(was, State::Reachable | State::Stale | State::Delay | State::Probe)
            && changed
            && ev != Evidence::Announcement
            && now < e.updated + cfg.locktime
        {
            self.counters.locktime_ignored += 1;
            return Learned::Ignored;
        }
        if !changed && !confirmed && !matches!(was, State::Incomplete | State::Failed) {
            // Same address, weaker evidence: keep the state (Linux does not turn REACHABLE
            // into STALE for an unchanged address).
            return Learned::Unchanged;
        }
        if changed && !matches!(was, State::Incomplete | State::Failed) {
            self.counters.mac_changes += 1;
        }
        let waiting = e.waiting;
        e.mac = mac;
        e.updated = now;
        e.tries = 0;
        e.waiting = 0;
        if confirmed {
            e.state = State::Reachable;
            e.deadline = now + cfg.reachable;
            self.counters.replies_learned += 1;
        } else {
            // One-way evidence: usable, reconfirmed on first use.
            e.state = State::Stale;
            e.deadline = now + cfg.stale_gc;
            self.counters.passive_learned += 1;
        }
        self.earliest = self.earliest.min(e.deadline);
        match was {
            State::Incomplete => Learned::Resolved { mac, waiting },
            _ => Learned::Updated,
        }
    }

    /// Upper-layer proof that `ip` is reachable at its cached address — e.g. TCP received an
    /// ACK for new data from it (Linux `neigh_confirm`, RFC 4861 §7.3.1 "hints from upper
    /// layers"). Spares the unicast probes. Returns whether an entry was confirmed.
    pub fn confirm(&mut self, now: Instant, ip: Ipv4Addr) -> bool {
        let reachable = self.cfg.reachable;
        let Some(e) = self.find(ip).and_then(|i| self.slots[i].as_mut()) else {
            return false;
        };
        if !matches!(e.state, State::Reachable | State::Stale | State::Delay | State::Probe) {
            return false;
        }
        e.state = State::Reachable;
        e.deadline = now + reachable;
        e.tries = 0;
        self.earliest = self.earliest.min(e.deadline);
        self.counters.confirmations += 1;
        true
    }

    /// Runs the timers due at `now` and returns the next piece of work, if any. Call it until
    /// it returns `None` (each call scans the table while something is due).
    pub fn poll(&mut self, now: Instant) -> Option<Due> {
        if now < self.earliest {
            return None;
        }
        let cfg = self.cfg;
        let mut next = NEVER;
        let mut i = 0;
        while i < self.slots.len() {
            let Some(e) = self.slots[i].as_mut() else {
                i += 1;
                continue;
            };
            if e.deadline > now {
                next = next.min(e.deadline);
                i += 1;
                continue;
            }
            let due = match e.state {
                State::Incomplete | State::Probe => {
                    let (max, dst) = match e.state {
                        State::Incomplete => (cfg.max_requests, MacAddr::BROADCAST),
                        _ => (cfg.max_probes, e.mac),
                    };
                    if e.tries < max {
                        // Retransmit, waiting twice as long as the last time.
                        e.deadline = now + backoff(&cfg, e.tries);
                        e.tries += 1;
                        if e.state == State::Incomplete {
                            self.counters.requests_sent += 1;
                        } else {
                            self.counters.probes_sent += 1;
                        }
                        Due::Request { ip: e.ip, dst }
                    } else {
                        // No answer to any request: FAILED, and hold down.
                        let waiting = if e.state == State::Incomplete { e.waiting } else { 0 };
                        e.state = State::Failed;
                        e.deadline = now + cfg.failed_hold;
                        e.waiting = 0;
                        e.tries = 0;
                        self.counters.resolution_failures += 1;
                        Due::Failed { ip: e.ip, waiting }
                    }
                }
                State::Delay => {
                    // Nobody confirmed the address while it was used: ask its owner directly.
                    e.state = State::Probe;
                    e.deadline = now + backoff(&cfg, 0);
                    e.tries = 1;
                    self.counters.probes_sent += 1;
                    Due::Request { ip: e.ip, dst: e.mac }
                }
                State::Reachable => {
                    e.state = State::Stale;
                    e.deadline = now + cfg.stale_gc;
                    next = next.min(e.deadline);
                    i += 1;
                    continue;
                }
                State::Stale | State::Failed => {
                    // Unused long enough, or the hold-down is over: free the slot. Backward
                    // shift may move a later entry into slot `i`: look at it again.
                    self.remove_at(i);
                    self.counters.expired += 1;
                    continue;
                }
            };
            // Entries after `i` have not been looked at: the next call scans again.
            self.earliest = now;
            return Some(due);
        }
        self.earliest = next;
        None
    }

    /// When `poll` next has work: never later than the true deadline (it may be earlier, then
    /// `poll` finds nothing and tightens it). `None`: no entry has a timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        (self.earliest != NEVER).then_some(self.earliest)
    }

    /// A new INCOMPLETE entry whose first request the caller sends now (with one packet held).
    fn fresh_incomplete(&mut self, now: Instant, ip: Ipv4Addr) -> Entry {
        let deadline = now + backoff(&self.cfg, 0);
        self.counters.requests_sent += 1;
        Entry { ip, mac: MacAddr::ZERO, state: State::Incomplete, deadline, updated: now, used: now, tries: 1, waiting: 1 }
    }

    /// Frees an entry for a new resolution: a FAILED one, else the least recently used STALE
    /// one. Entries in use (INCOMPLETE with held packets, REACHABLE, DELAY, PROBE) are never
    /// taken: a table too small for its working set then drops, counted, instead of thrashing
    /// into a request storm (Linux's forced GC likewise spares referenced entries).
    fn evict(&mut self) -> bool {
        let mut victim: Option<(usize, bool, Instant)> = None;
        for (i, e) in self.slots.iter().enumerate() {
            let Some(e) = e else { continue };
            let failed = match e.state {
                State::Failed => true,
                State::Stale => false,
                _ => continue,
            };
            let better = match victim {
                None => true,
                Some((_, vf, vu)) => (failed && !vf) || (failed == vf && e.used < vu),
            };
            if better {
                victim = Some((i, failed, e.used));
            }
        }
        let Some((i, _, _)) = victim else { return false };
        self.remove_at(i);
        self.counters.evictions += 1;
        true
    }

    fn home(&self, ip: Ipv4Addr) -> usize {
        // Fibonacci hashing: the top `bits` bits of the product spread neighbouring addresses.
        let h = u64::from(u32::from(ip)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (h >> (64 - self.bits.max(1))) as usize & self.mask()
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    fn find(&self, ip: Ipv4Addr) -> Option<usize> {
        let mut i = self.home(ip);
        loop {
            match &self.slots[i] {
                None => return None,
                Some(e) if e.ip == ip => return Some(i),
                Some(_) => i = (i + 1) & self.mask(),
            }
        }
    }

    /// Stores an entry whose address is not in the table; the caller checked `len < capacity`.
    fn insert(&mut self, e: Entry) {
        let mut i = self.home(e.ip);
        while self.slots[i].is_some() {
            i = (i + 1) & self.mask();
        }
        self.earliest = self.earliest.min(e.deadline);
        self.slots[i] = Some(e);
        self.len += 1;
    }

    /// Linear-probing deletion by backward shift (Knuth, TAOCP vol. 3, 6.4 Algorithm R): every
    /// later entry of the chain that may move into the hole does, so lookups never meet a
    /// tombstone.
    fn remove_at(&mut self, mut hole: usize) {
        self.slots[hole] = None;
        self.len -= 1;
        let mut j = hole;
        loop {
            j = (j + 1) & self.mask();
            let Some(e) = self.slots[j] else { return };
            let k = self.home(e.ip);
            // The entry at j stays if its home lies cyclically in (hole, j].
            let stays = if hole <= j { hole < k && k <= j } else { hole < k || k <= j };
            if !stays {
                self.slots[hole] = Some(e);
                self.slots[j] = None;
                hole = j;
            }
        }
    }
}

/// The wait after the `k`-th request (from 0): `retrans · 2^k`, at most `retrans_max`.
fn backoff(cfg: &NeighborConfig, k: u8) -> Duration {
    let factor = 1u64.checked_shl(u32::from(k)).unwrap_or(u64::MAX);
    Duration(cfg.retrans.micros().saturating_mul(factor).min(cfg.retrans_max.micros().max(cfg.retrans.micros())))
}

/// The Ethernet group address of an IPv4 multicast address (RFC 1112 §6.4: 01:00:5e followed
/// by the low-order 23 bits of the group).
pub fn multicast_mac(ip: Ipv4Addr) -> MacAddr {
    let o = ip.octets();
    MacAddr([0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]])
}

/// Writes an ARP request "who has `target`, tell `our_ip`" (RFC 826; tha zero) into `buf`,
/// sent to `dst`: broadcast to resolve, the cached MAC for a unicast probe (as
/// [`Due::Request`] says). Returns the frame length (the NIC pads to 60 bytes).
pub fn emit_request(buf: &mut [u8], our_mac: MacAddr, our_ip: Ipv4Addr, target: Ipv4Addr, dst: MacAddr) -> Result<usize, WireError> {
    let req = ArpRepr::request(our_mac, our_ip, target);
    if dst.is_broadcast() {
        return req.emit_frame(buf);
    }
    let frame = buf.get_mut(..FRAME_LEN).ok_or(WireError::BufferTooSmall)?;
    emit_ethernet_header(frame, dst, our_mac, ethernet::ethertype::ARP)?;
    req.emit(&mut frame[ethernet::HEADER_LEN..])?;
    Ok(FRAME_LEN)
}

#[cfg(test)]
mod tests;
