//! Services: what runs on top of a TCP connection, seen by TCP as a byte stream.
//!
//! The contract is *pull-based and deterministic* so that output needs no per-connection send
//! buffer and can be reproduced on a standby from replicated state alone (DESIGN §4, output
//! commit): the TCP sender asks the service for the bytes at stream offset `off` whenever it
//! (re)transmits, and the service must return the same bytes for the same offset every time,
//! for every offset in `[acked, tx_end())`.
//!
//! Stream offsets count payload bytes from 0 (the first byte after the SYN), independent of
//! sequence numbers; TCP maps `seq = iss + 1 + off` (mod 2^32).
//!
//! **One kind, one module.** A service kind implements [`Kind`] in its own module: its
//! listener spec, its per-connection state, binding the two into a [`ByteStream`], its
//! counters, and its image for replication (encoded on the active, rebuilt on the standby).
//! The `kinds!` registry below is the one place the engine dispatches over kinds: it
//! generates [`ServiceSpec`], [`ServiceState`], [`Bound`] and [`ServiceCounters`] as enums
//! (and a struct) over the registered kinds, so the per-packet path is a `match`, with no
//! allocation and no vtable. Adding a kind is its module, one line in the registry, and its
//! config section (`src/config.rs`).

pub mod echo;
pub mod http;
pub mod object;
pub mod proxy;

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::time::Instant;

use crate::counters::Counters;

/// What TCP sees of a service bound to one connection.
pub trait ByteStream {
    /// In-order bytes from the peer. Returns how many the service consumed; the rest stays
    /// unacknowledged (the peer retransmits it) and the advertised window shrinks accordingly.
    fn on_recv(&mut self, data: &[u8]) -> usize;
    /// The peer sent FIN: no more bytes will arrive.
    fn on_peer_fin(&mut self);
    /// Stream offset one past the last output byte produced so far.
    fn tx_end(&self) -> u64;
    /// True once the service will produce no more output: TCP sends FIN after `tx_end()`.
    fn tx_closed(&self) -> bool;
    /// Copy output bytes starting at stream offset `off` into `buf`; returns how many were
    /// copied (less than `buf.len()` only at `tx_end()`). Deterministic for every `off` in
    /// `[acked, tx_end())`, where `acked` is the last value passed to `on_acked`.
    fn read_at(&self, off: u64, buf: &mut [u8]) -> usize;
    /// The peer acknowledged every output byte below stream offset `off`; the service may free
    /// whatever it kept to answer `read_at` for them.
    fn on_acked(&mut self, off: u64);
    /// How many more bytes `on_recv` would accept now (drives the advertised receive window).
    fn rx_space(&self) -> usize;
    /// How far TCP may acknowledge what it delivered: every byte below this stream offset of
    /// the received stream (and the peer's FIN once it covers every byte delivered). `None`:
    /// all of it, as delivered. A proxy half with `commit = "peer"` acknowledges its peer's
    /// bytes only once the other half's peer acknowledged them (`Tcb::ack_point`).
    fn ack_limit(&self) -> Option<u64> {
        None
    }
    /// How far, at a takeover, an acknowledgement from the peer may lie beyond what the
    /// replica recorded as sent and still be taken as sent (`Tcb::catch_up_sent`): by
    /// default what the service has produced. A proxy half with `commit = "peer"` says more
    /// (its partner's replica holds none of the bytes the dead engine relayed).
    fn catch_up_end(&self) -> u64 {
        self.tx_end()
    }
    /// Bytes of the received stream, next after what was delivered, that TCP is to count
    /// as received without them (and then forget): a proxy half with `commit = "peer"`
    /// after a takeover, whose partner's peer acknowledged bytes that the dead engine
    /// relayed. This half's peer sent them, and may not send them again (it may have had
    /// them acknowledged while the standby lagged).
    fn take_skipped(&mut self) -> u64 {
        0
    }
}

/// A service whose state is borrowed whole (it needs neither a spec nor counters to run, as
/// echo) is its own bound stream.
impl<S: ByteStream + ?Sized> ByteStream for &mut S {
    #[inline]
    fn on_recv(&mut self, data: &[u8]) -> usize {
        (**self).on_recv(data)
    }
    #[inline]
    fn on_peer_fin(&mut self) {
        (**self).on_peer_fin()
    }
    #[inline]
    fn tx_end(&self) -> u64 {
        (**self).tx_end()
    }
    #[inline]
    fn tx_closed(&self) -> bool {
        (**self).tx_closed()
    }
    #[inline]
    fn read_at(&self, off: u64, buf: &mut [u8]) -> usize {
        (**self).read_at(off, buf)
    }
    #[inline]
    fn on_acked(&mut self, off: u64) {
        (**self).on_acked(off)
    }
    #[inline]
    fn rx_space(&self) -> usize {
        (**self).rx_space()
    }
    #[inline]
    fn ack_limit(&self) -> Option<u64> {
        (**self).ack_limit()
    }
    #[inline]
    fn catch_up_end(&self) -> u64 {
        (**self).catch_up_end()
    }
    #[inline]
    fn take_skipped(&mut self) -> u64 {
        (**self).take_skipped()
    }
}

/// One service kind: everything the engine needs to serve it and to replicate it.
///
/// The active and the standby run the same `Kind` code: the standby rebuilds a connection's
/// state by replaying its inputs through [`Kind::bind`], or, for a flow that joined late, from
/// its image ([`Kind::image`] on the active, [`Kind::from_image`] on the standby).
pub trait Kind {
    /// The kind's name in the configuration (`kind = "..."`) and in status output.
    const NAME: &'static str;
    /// First byte of this kind's service image: names the kind, so that an image is never
    /// rebuilt as another kind's state. Part of the replication wire format: never reuse one.
    const IMAGE_TAG: u8;
    /// What a listener of this kind is configured with, shared by all its connections.
    type Spec: Clone + std::fmt::Debug;
    /// Per-connection state, stored inline in the preallocated flow slot.
    type State: std::fmt::Debug;
    /// Whether the window of a connection's SYN (or SYN-ACK) is the service's room
    /// (`ByteStream::rx_space`) rather than 64 KiB. A kind whose room may be smaller than that
    /// says so: a peer that fills a first window the service cannot take has its excess
    /// dropped unacknowledged and retransmits it.
    const SYN_WINDOW_IS_ROOM: bool = false;
    /// Per-worker counters the kind's connections update.
    type Counters: Copy + Default + std::fmt::Debug;
    /// A connection's state bound to its listener's spec and the worker's counters: what TCP
    /// drives.
    type Conn<'a>: ByteStream
    where
        Self: 'a;

    /// A fresh connection (SYN accepted).
    fn new_state(spec: &Self::Spec) -> Self::State;
    /// Bind a connection's state for one TCP call.
    fn bind<'a>(state: &'a mut Self::State, spec: &'a Self::Spec, stats: &'a mut Self::Counters) -> Self::Conn<'a>;
    /// The spec a state is bound with when its flow's listener is of another kind. A flow's
    /// state is created from its listener's spec, so this cannot occur; it only keeps `bind`
    /// total.
    fn detached_spec() -> &'static Self::Spec;
    /// Whether the peer's FIN has been delivered to this connection.
    fn peer_fin(state: &Self::State) -> bool;
    /// Append the complete state (join snapshot), after the kind's [`Kind::IMAGE_TAG`].
    fn image(state: &Self::State, out: &mut Vec<u8>);
    /// Rebuild a state from [`Kind::image`]'s bytes (the tag stripped). `None` if the bytes
    /// are inconsistent (never trust the wire).
    fn from_image(spec: &Self::Spec, body: &[u8]) -> Option<Self::State>;
    /// Fold the worker's counters of this kind into the published worker counters.
    fn publish(_stats: &Self::Counters, _into: &mut Counters) {}

    // ---- Linked flows (a kind whose connections come in pairs: the proxy). The defaults
    // are those of a kind whose flows are never linked.

    /// Bind a connection's state together with its link partner's (`Stack::link`; `None`
    /// when it has none, and always on the standby's replay). A kind whose output is its
    /// partner's input reads the partner here.
    fn bind_linked<'a>(state: &'a mut Self::State, partner: Option<&'a mut Self::State>, spec: &'a Self::Spec, stats: &'a mut Self::Counters) -> Self::Conn<'a> {
        let _ = partner;
        Self::bind(state, spec, stats)
    }
    /// A connection was accepted (its SYN-ACK left): the flow the engine must open and link
    /// to it, if any ([`Open`]).
    fn on_accept(_spec: &Self::Spec, _state: &mut Self::State, _client: Ipv4Addr, _now: Instant) -> Option<Open<Self::State>> {
        None
    }
    /// After a TCP call of an accepted flow that has no link partner: the flow the engine must
    /// open and link to it now, if any (delayed binding: a proxy that chose its backend from
    /// the client's first bytes). Also asked after a takeover installs such a flow.
    fn take_open(_spec: &Self::Spec, _state: &mut Self::State, _client: Ipv4Addr, _now: Instant) -> Option<Open<Self::State>> {
        None
    }
    /// SYN retransmissions before a flow of this kind that the engine opens gives up (`None`:
    /// the TCP default): a connect timeout.
    fn syn_retries(_spec: &Self::Spec) -> Option<u8> {
        None
    }
    /// A flow of this kind opened by the engine ([`Kind::on_accept`]) exists.
    fn opened(_spec: &Self::Spec, _state: &Self::State) {}
    /// A flow of this kind was installed at a takeover, its connection still open (not in
    /// TIME-WAIT: that one is only [`Kind::closed`] later, with `open` false).
    fn resumed(_spec: &Self::Spec, _state: &Self::State) {}
    /// A flow of this kind entered TIME-WAIT: its connection is over, only the 2·MSL wait is
    /// left (its [`Kind::closed`] follows with `open` false).
    fn quiet(_spec: &Self::Spec, _state: &Self::State) {}
    /// A flow of this kind is gone (`connected`: its handshake had completed; `open`: it
    /// never went quiet, [`Kind::quiet`]).
    fn closed(_spec: &Self::Spec, _state: &Self::State, _connected: bool, _open: bool, _now: Instant) {}
    /// A flow of this kind that the engine opened completed its handshake (SYN-ACK) at `now`.
    fn connected(_spec: &Self::Spec, _state: &Self::State, _now: Instant) {}
    /// A flow of this kind is gone, having delivered `bytes_in` payload bytes to it and sent
    /// `bytes_out` new ones (before [`Kind::closed`]).
    fn transferred(_spec: &Self::Spec, _state: &Self::State, _bytes_in: u64, _bytes_out: u64) {}
    /// The link partner is closing in order: keep what it held for this flow (`acked`: what
    /// this flow's peer acknowledged of this flow's output).
    fn adopt(_state: &mut Self::State, _closing: &mut Self::State, _acked: u64) {}
    /// The link partner ended (after [`Kind::adopt`] for an orderly end). Returns whether
    /// this flow must be reset too.
    fn partner_ended(_state: &mut Self::State, _end: LinkEnd) -> bool {
        false
    }
    /// Takeover: this flow and its partner were installed as a pair; `partner_acked` is
    /// what the partner's peer acknowledged of the partner's output (its replicated send
    /// progress), which may free this flow's buffers.
    fn resume_linked(_spec: &Self::Spec, _state: &mut Self::State, _partner_acked: u64) {}
    /// Whether the bytes a connection of this listener receives are replicated (`Data`
    /// records the standby replays). A proxy with `commit = "peer"` replicates none: what
    /// one half received is acknowledged only once the other half's peer has it, so after a
    /// takeover the two peers' retransmissions fill every gap.
    fn payload_replicated(_spec: &Self::Spec) -> bool {
        true
    }
    /// Below which stream offset of what it received a connection's bytes are replicated
    /// (`u64::MAX`: all of them, as for every kind that replicates its payload). A proxy
    /// half with `commit = "peer"` replicates only what it read before its backend was
    /// chosen (those bytes were acknowledged as they came).
    fn replicated_until(_spec: &Self::Spec, _state: &Self::State) -> u64 {
        u64::MAX
    }
    /// A standby's replica with no link partner, of a listener whose payload is not
    /// replicated: how far it acknowledged what its peer sent, if less than it received (a
    /// proxy client half still choosing its backend acknowledged nothing; see
    /// `ShadowFlow::peer_resume_point`).
    fn unlinked_ack(_state: &Self::State) -> Option<u64> {
        None
    }
    /// A standby's replica of such a listener resumes from stream offset `off` of what its
    /// peer sent, below what it received: everything from there comes again (and any FIN
    /// after it).
    fn rewind_received(_state: &mut Self::State, _off: u64) {}
}

/// A flow a service asks the engine to open and link to a connection it just accepted.
#[derive(Debug)]
pub struct Open<S> {
    /// The source address: one of the engine's VIPs.
    pub from: Ipv4Addr,
    /// Where to (`None`: no destination is available; the accepted flow is told
    /// [`LinkEnd::NeverConnected`] at once).
    pub to: Option<SocketAddrV4>,
    /// The opened flow's service state.
    pub state: S,
}

/// How the other half of a linked pair ended.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LinkEnd {
    /// It was never synchronized: no destination, its next hop failed, its SYN went
    /// unanswered or was refused.
    NeverConnected,
    /// TCP reset or aborted it (RST either way, retransmission or idle timeout).
    Reset,
    /// It closed in order.
    Closed,
    /// Takeover: it was not among the replicas (this half is an orphan and will be reset).
    Lost,
}

/// The registry of service kinds: `Variant => kind type, counters field`. Generates the
/// dispatch enums; every `match` over kinds in the engine is in here.
macro_rules! kinds {
    ($( $(#[$doc:meta])* $V:ident => $K:ty, $field:ident; )+) => {
        /// What listens on a VIP:port: a registered kind's spec.
        #[derive(Clone, Debug)]
        pub enum ServiceSpec {
            $( $(#[$doc])* $V(<$K as Kind>::Spec), )+
        }

        /// A service instance bound to one flow.
        ///
        /// Inline on purpose: the flow table preallocates every slot, so no allocation happens
        /// per connection (the HTTP request buffer dominates the size; see BENCHMARKS "memory
        /// per flow").
        #[derive(Debug)]
        #[allow(clippy::large_enum_variant)]
        pub enum ServiceState {
            $( $V(<$K as Kind>::State), )+
        }

        /// The service of one flow seen as a byte stream (enum dispatch: no allocation, no
        /// vtable).
        pub enum Bound<'a> {
            $( $V(<$K as Kind>::Conn<'a>), )+
        }

        /// Per-worker counters of every kind.
        #[derive(Copy, Clone, Debug, Default)]
        pub struct ServiceCounters {
            $( pub $field: <$K as Kind>::Counters, )+
        }

        impl ServiceCounters {
            /// Fold every kind's counters into the worker's published counters.
            pub fn publish(&self, into: &mut Counters) {
                $( <$K as Kind>::publish(&self.$field, into); )+
            }
        }

        impl ServiceSpec {
            /// [`Kind::payload_replicated`] of this listener.
            pub fn payload_replicated(&self) -> bool {
                match self {
                    $( ServiceSpec::$V(s) => <$K as Kind>::payload_replicated(s), )+
                }
            }

            /// The kind's configuration name.
            pub fn kind_name(&self) -> &'static str {
                match self {
                    $( ServiceSpec::$V(_) => <$K as Kind>::NAME, )+
                }
            }
        }

        impl ServiceState {
            /// A fresh service instance for a flow of listener `spec`.
            pub fn for_spec(spec: &ServiceSpec) -> ServiceState {
                match spec {
                    $( ServiceSpec::$V(s) => ServiceState::$V(<$K as Kind>::new_state(s)), )+
                }
            }

            /// Bind this state to its listener's spec and the worker's counters for one call.
            #[inline]
            #[allow(unreachable_patterns)]
            pub fn bind<'a>(&'a mut self, spec: &'a ServiceSpec, stats: &'a mut ServiceCounters) -> Bound<'a> {
                match (self, spec) {
                    $( (ServiceState::$V(st), ServiceSpec::$V(sp)) => Bound::$V(<$K as Kind>::bind(st, sp, &mut stats.$field)), )+
                    $( (ServiceState::$V(st), _) => Bound::$V(<$K as Kind>::bind(st, <$K as Kind>::detached_spec(), &mut stats.$field)), )+
                }
            }

            /// The kind's configuration name (as [`ServiceSpec::kind_name`] of its spec).
            pub fn kind_name(&self) -> &'static str {
                match self {
                    $( ServiceState::$V(_) => <$K as Kind>::NAME, )+
                }
            }

            /// [`ServiceState::bind`] together with the link partner's state (ignored unless
            /// it is of the same kind).
            #[inline]
            #[allow(unreachable_patterns)]
            pub fn bind_linked<'a>(&'a mut self, partner: Option<&'a mut ServiceState>, spec: &'a ServiceSpec, stats: &'a mut ServiceCounters) -> Bound<'a> {
                match (self, spec) {
                    $( (ServiceState::$V(st), ServiceSpec::$V(sp)) => {
                        let p = match partner { Some(ServiceState::$V(p)) => Some(p), _ => None };
                        Bound::$V(<$K as Kind>::bind_linked(st, p, sp, &mut stats.$field))
                    } )+
                    $( (ServiceState::$V(st), _) => Bound::$V(<$K as Kind>::bind(st, <$K as Kind>::detached_spec(), &mut stats.$field)), )+
                }
            }

            /// [`Kind::on_accept`] of this flow's kind.
            #[allow(unreachable_patterns)]
            pub fn on_accept(&mut self, spec: &ServiceSpec, client: Ipv4Addr, now: Instant) -> Option<Open<ServiceState>> {
                match (self, spec) {
                    $( (ServiceState::$V(st), ServiceSpec::$V(sp)) => <$K as Kind>::on_accept(sp, st, client, now)
                        .map(|o| Open { from: o.from, to: o.to, state: ServiceState::$V(o.state) }), )+
                    _ => None,
                }
            }

            /// [`Kind::opened`], [`Kind::resumed`], [`Kind::connected`] or [`Kind::closed`] (after
    /// [`Kind::transferred`]) of this flow's kind.
            #[allow(unreachable_patterns)]
            pub fn lifecycle(&self, spec: &ServiceSpec, ev: Lifecycle) {
                match (self, spec) {
                    $( (ServiceState::$V(st), ServiceSpec::$V(sp)) => match ev {
                        Lifecycle::Opened => <$K as Kind>::opened(sp, st),
                        Lifecycle::Resumed => <$K as Kind>::resumed(sp, st),
                        Lifecycle::Quiet => <$K as Kind>::quiet(sp, st),
                        Lifecycle::Closed { connected, open, now, bytes: (i, o) } => {
                            <$K as Kind>::transferred(sp, st, i, o);
                            <$K as Kind>::closed(sp, st, connected, open, now)
                        }
                        Lifecycle::Connected { now } => <$K as Kind>::connected(sp, st, now),
                    }, )+
                    _ => {}
                }
            }

            /// [`Kind::adopt`]: the link partner `closing` (of the same kind) closes in order.
            #[allow(unreachable_patterns)]
            pub fn adopt(&mut self, closing: &mut ServiceState, acked: u64) {
                match (self, closing) {
                    $( (ServiceState::$V(st), ServiceState::$V(c)) => <$K as Kind>::adopt(st, c, acked), )+
                    _ => {}
                }
            }

            /// [`Kind::take_open`] of this flow's kind.
            #[allow(unreachable_patterns)]
            pub fn take_open(&mut self, spec: &ServiceSpec, client: Ipv4Addr, now: Instant) -> Option<Open<ServiceState>> {
                match (self, spec) {
                    $( (ServiceState::$V(st), ServiceSpec::$V(sp)) => <$K as Kind>::take_open(sp, st, client, now)
                        .map(|o| Open { from: o.from, to: o.to, state: ServiceState::$V(o.state) }), )+
                    _ => None,
                }
            }

            /// [`Kind::syn_retries`] of this flow's kind.
            #[allow(unreachable_patterns)]
            pub fn syn_retries(&self, spec: &ServiceSpec) -> Option<u8> {
                match (self, spec) {
                    $( (ServiceState::$V(_), ServiceSpec::$V(sp)) => <$K as Kind>::syn_retries(sp), )+
                    _ => None,
                }
            }

            /// [`Kind::partner_ended`]: whether this flow must be reset too.
            pub fn partner_ended(&mut self, end: LinkEnd) -> bool {
                match self {
                    $( ServiceState::$V(s) => <$K as Kind>::partner_ended(s, end), )+
                }
            }

            /// [`Kind::resume_linked`].
            #[allow(unreachable_patterns)]
            pub fn resume_linked(&mut self, spec: &ServiceSpec, partner_acked: u64) {
                match (self, spec) {
                    $( (ServiceState::$V(s), ServiceSpec::$V(sp)) => <$K as Kind>::resume_linked(sp, s, partner_acked), )+
                    _ => {}
                }
            }

            /// [`Kind::unlinked_ack`].
            pub fn unlinked_ack(&self) -> Option<u64> {
                match self {
                    $( ServiceState::$V(s) => <$K as Kind>::unlinked_ack(s), )+
                }
            }

            /// [`Kind::rewind_received`].
            pub fn rewind_received(&mut self, off: u64) {
                match self {
                    $( ServiceState::$V(s) => <$K as Kind>::rewind_received(s, off), )+
                }
            }

            /// [`Kind::replicated_until`].
            #[allow(unreachable_patterns)]
            pub fn replicated_until(&self, spec: &ServiceSpec) -> u64 {
                match (self, spec) {
                    $( (ServiceState::$V(s), ServiceSpec::$V(sp)) => <$K as Kind>::replicated_until(sp, s), )+
                    _ => u64::MAX,
                }
            }

            /// The window a connection's SYN or SYN-ACK offers ([`Kind::SYN_WINDOW_IS_ROOM`]).
            pub fn syn_window(&mut self, spec: &ServiceSpec, stats: &mut ServiceCounters) -> usize {
                let room = match self {
                    $( ServiceState::$V(_) => <$K as Kind>::SYN_WINDOW_IS_ROOM, )+
                };
                if room { self.bind(spec, stats).rx_space() } else { usize::MAX }
            }

            /// Whether the peer's FIN has reached the service.
            pub fn peer_fin(&self) -> bool {
                match self {
                    $( ServiceState::$V(s) => <$K as Kind>::peer_fin(s), )+
                }
            }

            /// Serialize the complete service state (join snapshot): the kind's image tag,
            /// then its image.
            pub fn image(&self, out: &mut Vec<u8>) {
                match self {
                    $( ServiceState::$V(s) => {
                        out.push(<$K as Kind>::IMAGE_TAG);
                        <$K as Kind>::image(s, out);
                    } )+
                }
            }

            /// Rebuild from [`ServiceState::image`] bytes for a flow of listener `spec`.
            /// `None` if the bytes are inconsistent or of another kind (never trust the wire).
            pub fn from_image(spec: &ServiceSpec, b: &[u8]) -> Option<ServiceState> {
                let (&tag, body) = b.split_first()?;
                match spec {
                    $( ServiceSpec::$V(s) if tag == <$K as Kind>::IMAGE_TAG => {
                        <$K as Kind>::from_image(s, body).map(ServiceState::$V)
                    } )+
                    _ => None,
                }
            }
        }

        impl ByteStream for Bound<'_> {
            #[inline]
            fn on_recv(&mut self, data: &[u8]) -> usize {
                match self { $( Bound::$V(s) => s.on_recv(data), )+ }
            }
            #[inline]
            fn on_peer_fin(&mut self) {
                match self { $( Bound::$V(s) => s.on_peer_fin(), )+ }
            }
            #[inline]
            fn tx_end(&self) -> u64 {
                match self { $( Bound::$V(s) => s.tx_end(), )+ }
            }
            #[inline]
            fn tx_closed(&self) -> bool {
                match self { $( Bound::$V(s) => s.tx_closed(), )+ }
            }
            #[inline]
            fn read_at(&self, off: u64, buf: &mut [u8]) -> usize {
                match self { $( Bound::$V(s) => s.read_at(off, buf), )+ }
            }
            #[inline]
            fn on_acked(&mut self, off: u64) {
                match self { $( Bound::$V(s) => s.on_acked(off), )+ }
            }
            #[inline]
            fn rx_space(&self) -> usize {
                match self { $( Bound::$V(s) => s.rx_space(), )+ }
            }
            #[inline]
            fn ack_limit(&self) -> Option<u64> {
                match self { $( Bound::$V(s) => s.ack_limit(), )+ }
            }
            #[inline]
            fn catch_up_end(&self) -> u64 {
                match self { $( Bound::$V(s) => s.catch_up_end(), )+ }
            }
            #[inline]
            fn take_skipped(&mut self) -> u64 {
                match self { $( Bound::$V(s) => s.take_skipped(), )+ }
            }
        }
    };
}

kinds! {
    /// HTTP/1.1 objects from a store shared read-only by all workers.
    Object => http::ObjectKind, object;
    /// Bytes back.
    Echo => echo::EchoKind, echo;
    /// A TCP load balancer: each client connection relayed to a backend connection.
    Proxy => proxy::ProxyKind, proxy;
}

/// A point in a flow's life a kind may account for ([`ServiceState::lifecycle`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Lifecycle {
    /// Opened by the engine ([`Kind::on_accept`]).
    Opened,
    /// Installed at a takeover, not in TIME-WAIT.
    Resumed,
    /// Entered TIME-WAIT (or was installed in it): the connection is over.
    Quiet,
    /// Gone (`connected`: its handshake had completed; `open`: it never went [`Lifecycle::Quiet`];
    /// `bytes`: payload bytes in and out, `TcbStats::bytes_in`/`bytes_out`).
    Closed { connected: bool, open: bool, now: Instant, bytes: (u64, u64) },
    /// Opened by the engine, and its SYN-ACK arrived now.
    Connected { now: Instant },
}

impl Lifecycle {
    /// The end of the flow `tcb` at `now` (`quiet`: it went [`Lifecycle::Quiet`] before).
    pub fn closed(tcb: &crate::tcp::Tcb, quiet: bool, now: Instant) -> Lifecycle {
        let s = tcb.stats();
        Lifecycle::Closed { connected: tcb.syn_acked(), open: !quiet, now, bytes: (s.bytes_in, s.bytes_out) }
    }
}

#[cfg(test)]
mod tests {
    use super::echo::{EchoConfig, EchoCursor};
    use super::http::{HttpCounters, HttpState, ObjectConn};
    use super::object::{ObjectId, ObjectStore};
    use super::*;

    /// The image bytes are replication wire format (SvcImage chunks): pin the layout, tag
    /// byte first, so that moving code between kinds cannot change it unnoticed.
    #[test]
    fn image_layout_is_pinned() {
        let spec = ServiceSpec::Echo(EchoConfig { buf_size: 1024 });
        let mut st = ServiceState::for_spec(&spec);
        let mut stats = ServiceCounters::default();
        {
            let mut s = st.bind(&spec, &mut stats);
            assert_eq!(s.on_recv(b"abc"), 3);
            s.on_acked(1);
        }
        let mut img = Vec::new();
        st.image(&mut img);
        let mut want = vec![1u8];
        want.extend_from_slice(&3u64.to_le_bytes());
        want.extend_from_slice(&1u64.to_le_bytes());
        want.push(0);
        want.extend_from_slice(b"bc");
        assert_eq!(img, want);
        let back = ServiceState::from_image(&spec, &img).expect("echo image");
        let cursor = EchoCursor { received: 3, acked: 1, peer_fin: false };
        assert!(matches!(back, ServiceState::Echo(ref e) if e.cursor() == cursor && e.unacked() == (&b"bc"[..], &b""[..])));

        let store = std::sync::Arc::new(ObjectStore::empty(Default::default()));
        let spec = ServiceSpec::Object(store.clone());
        let mut h = HttpState::default();
        let mut hs = HttpCounters::default();
        ObjectConn::new(&mut h, &store, &mut hs).on_recv(b"GET /gen/10 HTTP/1.1\r\n\r\nGET /x");
        let c = h.cursor();
        let st = ServiceState::Object(h);
        let mut img = Vec::new();
        st.image(&mut img);
        let mut want = vec![2u8, 1];
        want.extend_from_slice(&0u64.to_le_bytes());
        want.extend_from_slice(&c.tx_end.to_le_bytes());
        want.push(0);
        want.extend_from_slice(&0u64.to_le_bytes());
        want.extend_from_slice(&10u64.to_le_bytes());
        want.extend_from_slice(&ObjectId::GENERATED.0.to_le_bytes());
        want.extend_from_slice(&200u16.to_le_bytes());
        want.push(0);
        want.extend_from_slice(b"GET /x");
        assert_eq!(img, want);
        let back = ServiceState::from_image(&spec, &img).expect("object image");
        assert!(matches!(back, ServiceState::Object(ref b) if b.cursor() == c && b.partial_request() == b"GET /x"));

        // An image is never rebuilt as another kind's state.
        assert!(ServiceState::from_image(&ServiceSpec::Echo(EchoConfig::default()), &img).is_none());
        assert!(ServiceState::from_image(&spec, &[]).is_none());
    }
}
