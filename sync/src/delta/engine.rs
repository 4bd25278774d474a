//! Delta records as the engine sees them: a flow's [`FlowImage`] packed into a
//! `FlowNew`/`FlowUpdate` record ([`FlowStateRec`]) or a one-record `FlowStep`
//! ([`FlowStepRec`]), and unpacked again on the standby. The layout itself is in the parent
//! module's docs.

use super::{DeltaError, FlowKeyRec, FlowStateRec, FlowStepRec, SERVICE_CURSOR_LEN};
use flowtwin_engine::flow::FlowKey;
use flowtwin_engine::replica::{FlowImage, Origin};
use flowtwin_engine::seq::SeqNum;
use flowtwin_engine::tcp::{State, TcbSnapshot};
use flowtwin_engine::wire::MacAddr;
use std::net::Ipv6Addr;

/// Offsets inside [`FlowStateRec::service_cursor`] of the engine fields the fixed part has
/// no place for (see the module docs).
mod cursor {
    pub const LOCAL_PORT: usize = 0;
    pub const REMOTE_PORT: usize = 2;
    pub const VIP_MAC: usize = 4;
    pub const TS_LAST_SENT: usize = 12;
    pub const TX_ACKED: usize = 16;
    pub const TX_SENT: usize = 24;
    pub const RX_DELIVERED: usize = 32;
    pub const ORIGIN: usize = 40;
    pub const LINKED: usize = 41;
    pub const LINK_SLOT: usize = 44;
    pub const LINK_GENERATION: usize = 48;
    pub const LISTENER_FP: usize = 52;
}

/// The origin byte: 0 accepted (what every earlier layout wrote there), 1 opened.
fn origin_byte(o: Origin) -> u8 {
    match o {
        Origin::Accepted => 0,
        Origin::Opened => 1,
    }
}

/// The engine state a state byte names; `Field("state")` if it names none (never trust the
/// wire).
fn engine_state(b: u8) -> Result<State, DeltaError> {
    if !(State::SynSent as u8..=State::Closed as u8).contains(&b) {
        return Err(DeltaError::Field("state"));
    }
    Ok(State::from_u8(b))
}

impl FlowStepRec {
    /// The step record of an engine [`FlowImage`] (its identity is not recorded).
    pub fn from_image(img: &FlowImage) -> FlowStepRec {
        let t = &img.tcb;
        FlowStepRec {
            state: t.state as u8,
            snd_una: t.snd_una.0,
            snd_nxt: t.snd_nxt.0,
            rcv_nxt: t.rcv_nxt.0,
            snd_wnd: t.snd_wnd,
            rcv_wnd: t.rcv_wnd,
            ts_recent: t.ts_recent,
            ts_last_sent: t.ts_last_sent,
            tx_acked_lo: t.tx_acked as u32,
            tx_sent_lo: t.tx_sent as u32,
            rx_delivered_lo: t.rx_delivered as u32,
        }
    }

    /// `base` (the replica's image) moved to this step. Each stream offset becomes the value
    /// at or after `base`'s whose low 32 bits are the record's; an offset that would have to
    /// move back, or forward by 2^31 or more, is refused (`Field`): the stream would not be
    /// the active's. As is a state byte that is not an engine state.
    pub fn apply_to(&self, base: &FlowImage) -> Result<FlowImage, DeltaError> {
        let state = engine_state(self.state)?;
        let extend = |old: u64, lo: u32, what: &'static str| {
            let d = lo.wrapping_sub(old as u32);
            if d >= 1 << 31 {
                return Err(DeltaError::Field(what));
            }
            Ok(old + u64::from(d))
        };
        let mut img = *base;
        let t = &mut img.tcb;
        t.tx_acked = extend(t.tx_acked, self.tx_acked_lo, "tx_acked")?;
        t.tx_sent = extend(t.tx_sent, self.tx_sent_lo, "tx_sent")?;
        t.rx_delivered = extend(t.rx_delivered, self.rx_delivered_lo, "rx_delivered")?;
        t.state = state;
        t.snd_una = SeqNum(self.snd_una);
        t.snd_nxt = SeqNum(self.snd_nxt);
        t.rcv_nxt = SeqNum(self.rcv_nxt);
        t.snd_wnd = self.snd_wnd;
        t.rcv_wnd = self.rcv_wnd;
        t.ts_recent = self.ts_recent;
        t.ts_last_sent = self.ts_last_sent;
        Ok(img)
    }
}

impl FlowStateRec {
    /// The record of an engine [`FlowImage`]. `snd_wl1`, `snd_wl2` and `max_window` are not
    /// in the engine's snapshot (re-learned from the peer's next segment) and travel as 0;
    /// `rcv_wup` is `rcv_nxt` (the snapshot's `rcv_wnd` is measured from `rcv_nxt`).
    pub fn from_image(img: &FlowImage) -> FlowStateRec {
        let t = &img.tcb;
        let mut c = [0u8; SERVICE_CURSOR_LEN];
        c[cursor::LOCAL_PORT..][..2].copy_from_slice(&t.local_port.to_le_bytes());
        c[cursor::REMOTE_PORT..][..2].copy_from_slice(&t.remote_port.to_le_bytes());
        c[cursor::VIP_MAC..][..6].copy_from_slice(&img.vip_mac.0);
        c[cursor::TS_LAST_SENT..][..4].copy_from_slice(&t.ts_last_sent.to_le_bytes());
        c[cursor::TX_ACKED..][..8].copy_from_slice(&t.tx_acked.to_le_bytes());
        c[cursor::TX_SENT..][..8].copy_from_slice(&t.tx_sent.to_le_bytes());
        c[cursor::RX_DELIVERED..][..8].copy_from_slice(&t.rx_delivered.to_le_bytes());
        c[cursor::ORIGIN] = origin_byte(img.origin);
        c[cursor::LISTENER_FP..][..8].copy_from_slice(&img.listener_fp.to_le_bytes());
        if let Some((slot, generation)) = img.link {
            c[cursor::LINKED] = 1;
            c[cursor::LINK_SLOT..][..4].copy_from_slice(&slot.to_le_bytes());
            c[cursor::LINK_GENERATION..][..4].copy_from_slice(&generation.to_le_bytes());
        }
        FlowStateRec {
            state: t.state as u8,
            iss: t.iss.0,
            irs: t.irs.0,
            snd_una: t.snd_una.0,
            snd_nxt: t.snd_nxt.0,
            rcv_nxt: t.rcv_nxt.0,
            snd_wnd: t.snd_wnd,
            rcv_wnd: t.rcv_wnd,
            snd_wl1: 0,
            snd_wl2: 0,
            rcv_wup: t.rcv_nxt.0,
            max_window: 0,
            snd_wscale: t.snd_wscale,
            rcv_wscale: t.rcv_wscale,
            mss: t.mss,
            sack_ok: t.sack_ok,
            ts_ok: t.ts_ok,
            wscale_ok: t.snd_wscale != 0 || t.rcv_wscale != 0,
            ts_offset: t.ts_offset,
            ts_recent: t.ts_recent,
            key: FlowKeyRec {
                remote_ip: img.key.remote_ip.octets(),
                remote_port: img.key.remote_port,
                local_ip: img.key.local_ip.octets(),
                local_port: img.key.local_port,
            },
            peer_mac: img.peer_mac.0,
            service_id: img.listener,
            service_cursor: c,
        }
    }

    /// The engine [`FlowImage`] this record carries; `Field("state")` if the state byte is
    /// not an engine state, `Field("origin")` / `Field("link")` for an origin or link byte
    /// this layout does not define (never trust the wire).
    pub fn to_image(&self) -> Result<FlowImage, DeltaError> {
        let state = engine_state(self.state)?;
        let c = &self.service_cursor;
        let origin = match c[cursor::ORIGIN] {
            0 => Origin::Accepted,
            1 => Origin::Opened,
            _ => return Err(DeltaError::Field("origin")),
        };
        let u16_at = |o: usize| u16::from_le_bytes([c[o], c[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([c[o], c[o + 1], c[o + 2], c[o + 3]]);
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&c[o..o + 8]);
            u64::from_le_bytes(b)
        };
        let link = match c[cursor::LINKED] {
            0 => None,
            1 => Some((u32_at(cursor::LINK_SLOT), u32_at(cursor::LINK_GENERATION))),
            _ => return Err(DeltaError::Field("link")),
        };
        let mut vip_mac = [0u8; 6];
        vip_mac.copy_from_slice(&c[cursor::VIP_MAC..cursor::VIP_MAC + 6]);
        Ok(FlowImage {
            key: FlowKey {
                remote_ip: Ipv6Addr::from(self.key.remote_ip),
                remote_port: self.key.remote_port,
                local_ip: Ipv6Addr::from(self.key.local_ip),
                local_port: self.key.local_port,
            },
            tcb: TcbSnapshot {
                state,
                local_port: u16_at(cursor::LOCAL_PORT),
                remote_port: u16_at(cursor::REMOTE_PORT),
                iss: SeqNum(self.iss),
                irs: SeqNum(self.irs),
                snd_una: SeqNum(self.snd_una),
                snd_nxt: SeqNum(self.snd_nxt),
                rcv_nxt: SeqNum(self.rcv_nxt),
                snd_wnd: self.snd_wnd,
                rcv_wnd: self.rcv_wnd,
                snd_wscale: self.snd_wscale,
                rcv_wscale: self.rcv_wscale,
                mss: self.mss,
                sack_ok: self.sack_ok,
                ts_ok: self.ts_ok,
                ts_offset: self.ts_offset,
                ts_recent: self.ts_recent,
                ts_last_sent: u32_at(cursor::TS_LAST_SENT),
                tx_acked: u64_at(cursor::TX_ACKED),
                tx_sent: u64_at(cursor::TX_SENT),
                rx_delivered: u64_at(cursor::RX_DELIVERED),
            },
            peer_mac: MacAddr(self.peer_mac),
            vip_mac: MacAddr(vip_mac),
            listener: self.service_id,
            listener_fp: u64_at(cursor::LISTENER_FP),
            origin,
            link,
        })
    }
}
