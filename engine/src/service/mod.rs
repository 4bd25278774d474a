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

pub mod echo;
pub mod http;
pub mod object;

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
}
