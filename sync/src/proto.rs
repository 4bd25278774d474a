//! The replication protocol between an active engine and its standby, over a kernel TCP
//! stream on the dedicated sync link (conntrackd FT-FW / pfsync shape: sequence-numbered
//! batches, cumulative acks, heartbeats, a bulk resync on join).
//!
//! # Framing
//! Every message is one frame, all integers little-endian:
//! ```text
//! len u32 (bytes after this field, 1..=MAX_FRAME) | type u8 | body
//! ```
//! # Messages
//! ```text
//! 1 Hello      magic u32 "FTWN" | version u16 | node_id u32 | epoch u64 | role u8 | mode u8
//!              | workers u16 | heartbeat_us u32 | dead_after u32 | fence_hold_us u32
//!              | handover_hold_us u32 | groups u64 (digest of the ownership
//!              groups' layout, `StackConfig::group_digest`) | session u64 | secret 16 B
//!              (the sender's secret for the connections it opens from the session's
//!              groups, `GroupSecrets`; a standby adopts its active's)  both ways, first frame
//! 2 Batch      worker u16 | first_seq u64 | last_seq u64 | records u32 | records × 64 B
//!              (whole deltas in ring byte order, see `delta`)          active → standby
//! 3 Ack        worker u16 | seq u64  (highest seq applied)             standby → active
//! 4 Heartbeat  epoch u64 | role u8 | in_sync u8 | token u64 | lag_records u64 | lag_us u64
//!              | flows u64                                             both ways
//! 5 Snapshot   token u64  (join snapshot in progress; in_sync after Barrier(token) from
//!              every worker)                                           active → standby
//! 6 Handover   epoch u64  (take over now; ctl failback)                active → standby
//! 7 Takeover   epoch u64  (I took over: you are fenced)                standby → active
//! 8 Refused    reason utf-8 (then close)                               both ways
//! 9 Pool       vip u32 | port u16 | version u64 | slots u16 | slots × (admin u8 | ip u32
//!              | port u16 | weight u16 | pools u64 | in_default u8 | health u8)
//!                                                                      active → standby
//!              (a proxy service's whole backend table: at a join, after `Snapshot`, and
//!              whenever an operator changed it; the standby's slots become these)
//! ```
//! `Hello` keeps `magic` and `version` first in every version so that a peer speaking
//! another version is recognised and refused with both version numbers named.

use crate::ring::{Record, RECORD_BYTES, RECORD_WORDS};
use flowtwin_engine::service::proxy::SlotImage;
use std::fmt;

/// Protocol magic, "FTWN" read as little-endian bytes.
pub const MAGIC: u32 = u32::from_le_bytes(*b"FTWN");
/// Protocol version this build speaks. It covers the delta layout inside batches
/// (`delta::DELTA_VERSION`): version 2 came with delta layout 3 (`FlowStep`), version 3 with
/// layout 4 (a flow's origin and link) and the group layout digest in `Hello`, version 4 with
/// layout 5 (a delta names its flow's ownership group), version 5 with the `Pool` message
/// (runtime backend pools; a version-4 peer would not know it, so it is refused at `Hello`),
/// version 6 with the opened connections' secret in `Hello` (a version-5 active would not
/// send it, and its standby would open backend connections on another clock), version 7
/// with each `Pool` slot's active-check health (one byte more per slot: a version-6 peer
/// would misread the table, so it is refused at `Hello` by name), version 8 with delta
/// layout 6 (each flow image names its listener's fingerprint) and `dead_after` in `Hello`
/// (a peer that declares the other dead after another number of heartbeats is refused),
/// version 9 with `fence_hold_us` and `handover_hold_us` in `Hello` (a strict peer that
/// holds its output for another time is refused; a version-8 peer would not send them, so
/// it is refused at `Hello` by version), version 10 with a proxy half's service image
/// naming where its first request ends (`head_end`, `commit = "peer"`; a version-9 peer
/// would misread a join snapshot's proxy flows, so it is refused at `Hello` by version).
pub const PROTO_VERSION: u16 = 10;
/// Largest frame body accepted (bytes after the length field).
pub const MAX_FRAME: usize = 4 << 20;
/// Most records one `Batch` carries (64 KiB of records).
pub const MAX_BATCH_RECORDS: usize = 1024;

const T_HELLO: u8 = 1;
const T_BATCH: u8 = 2;
const T_ACK: u8 = 3;
const T_HEARTBEAT: u8 = 4;
const T_SNAPSHOT: u8 = 5;
const T_HANDOVER: u8 = 6;
const T_TAKEOVER: u8 = 7;
const T_REFUSED: u8 = 8;
const T_POOL: u8 = 9;
/// Bytes of one slot in a `Pool` message.
const POOL_SLOT_BYTES: usize = 19;

/// An engine's replication role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Role {
    /// Serves the VIPs and replicates to a standby.
    Active = 1,
    /// Mirrors the active's flows.
    Standby = 2,
    /// Must never speak for the VIPs again (a newer epoch exists).
    Fenced = 3,
}

impl Role {
    /// The role for a wire byte.
    pub fn from_u8(b: u8) -> Option<Role> {
        Some(match b {
            1 => Role::Active,
            2 => Role::Standby,
            3 => Role::Fenced,
            _ => return None,
        })
    }
    /// Lower-case name (metrics, logs).
    pub fn name(self) -> &'static str {
        match self {
            Role::Active => "active",
            Role::Standby => "standby",
            Role::Fenced => "fenced",
        }
    }
}

/// The first frame both ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    pub magic: u32,
    pub version: u16,
    pub node_id: u32,
    pub epoch: u64,
    pub role: Role,
    /// 0 strict, 1 async.
    pub mode: u8,
    pub workers: u16,
    pub heartbeat_us: u32,
    /// Heartbeat intervals without a word after which the sender declares its peer dead
    /// (`sync.dead_after`): both engines must agree, or one would take over while the other
    /// still counts the silence as normal.
    pub dead_after: u32,
    /// How long, in µs, the sender holds its output after losing its in-sync standby
    /// (`sync.fence_hold_ms`): in strict mode a dropped standby takes over only within that
    /// time of the drop, trusting the active held that long.
    pub fence_hold_us: u32,
    /// How long, in µs, the sender holds all output after a handover while the engine that
    /// handed over rejoins it, and so how long that engine keeps its flows to fall back on
    /// (`sync.handover_hold_ms`): in strict mode both must be the same time.
    pub handover_hold_us: u32,
    /// Digest of the ownership groups (names and VIPs): both engines must agree on which
    /// VIP moves with which group.
    pub groups: u64,
    /// The groups (`GroupSet` bits) of the session this connection is for: an engine runs one
    /// session per set of groups, all over one listener.
    pub session: u64,
    /// The sender's secret of the connections it opens from the session's (lowest) group
    /// ([`flowtwin_engine::tcp::isn::GroupSecrets`]): a standby adopts its active's, so that
    /// after a takeover its backend connections' ISNs and TSvals continue the old active's.
    pub secret: [u8; 16],
}

impl Hello {
    /// Whether a peer's hello can be accepted by this build; the error names both versions.
    pub fn check(&self) -> Result<(), String> {
        if self.magic != MAGIC {
            return Err(format!(
                "peer is not a flowtwin sync endpoint (magic {:#010x})",
                self.magic
            ));
        }
        if self.version != PROTO_VERSION {
            return Err(format!(
                "sync protocol version mismatch: peer speaks version {}, this engine speaks version {}",
                self.version, PROTO_VERSION
            ));
        }
        Ok(())
    }
}

/// Periodic liveness and progress report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Heartbeat {
    pub epoch: u64,
    pub role: u8,
    pub in_sync: bool,
    /// Active: the join token in progress; standby: the token it is in sync for.
    pub token: u64,
    pub lag_records: u64,
    pub lag_us: u64,
    pub flows: u64,
}

/// A decoded message. `Batch` borrows its records' bytes from the receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg<'a> {
    Hello(Hello),
    Batch {
        worker: u16,
        first_seq: u64,
        last_seq: u64,
        records: &'a [u8],
    },
    Ack {
        worker: u16,
        seq: u64,
    },
    Heartbeat(Heartbeat),
    Snapshot {
        token: u64,
    },
    Handover {
        epoch: u64,
    },
    Takeover {
        epoch: u64,
    },
    Refused {
        reason: String,
    },
    /// A proxy service's backend table (`vip:port`), as of its `version`.
    Pool(PoolTable),
}

/// The body of a `Pool` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolTable {
    pub vip: std::net::Ipv4Addr,
    pub port: u16,
    pub version: u64,
    pub slots: Vec<SlotImage>,
}

/// A frame that does not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtoError {
    /// Length field 0 or above [`MAX_FRAME`].
    FrameLength(usize),
    /// Unknown message type.
    Type(u8),
    /// Body shorter than its type needs, or inconsistent.
    Body(&'static str),
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtoError::FrameLength(n) => {
                write!(f, "frame length {n} out of range 1..={MAX_FRAME}")
            }
            ProtoError::Type(t) => write!(f, "unknown message type {t}"),
            ProtoError::Body(what) => write!(f, "malformed {what} message"),
        }
    }
}

impl std::error::Error for ProtoError {}

// ---- encode -------------------------------------------------------------------------

/// Starts a frame of type `t` in `out`; returns the offset of its length field.
fn begin(out: &mut Vec<u8>, t: u8) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, t]);
    at
}

fn finish(out: &mut [u8], at: usize) {
    let len = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

/// Appends the frame of `m` to `out`.
pub fn encode(m: &Msg<'_>, out: &mut Vec<u8>) {
    match m {
        Msg::Hello(h) => {
            let at = begin(out, T_HELLO);
            out.extend_from_slice(&h.magic.to_le_bytes());
            out.extend_from_slice(&h.version.to_le_bytes());
            out.extend_from_slice(&h.node_id.to_le_bytes());
            out.extend_from_slice(&h.epoch.to_le_bytes());
            out.push(h.role as u8);
            out.push(h.mode);
            out.extend_from_slice(&h.workers.to_le_bytes());
            out.extend_from_slice(&h.heartbeat_us.to_le_bytes());
            out.extend_from_slice(&h.dead_after.to_le_bytes());
            out.extend_from_slice(&h.fence_hold_us.to_le_bytes());
            out.extend_from_slice(&h.handover_hold_us.to_le_bytes());
            out.extend_from_slice(&h.groups.to_le_bytes());
            out.extend_from_slice(&h.session.to_le_bytes());
            out.extend_from_slice(&h.secret);
            finish(out, at);
        }
        Msg::Batch {
            worker,
            first_seq,
            last_seq,
            records,
        } => {
            let at = begin_batch(
                out,
                *worker,
                *first_seq,
                *last_seq,
                records.len() / RECORD_BYTES,
            );
            out.extend_from_slice(records);
            finish(out, at);
        }
        Msg::Ack { worker, seq } => {
            let at = begin(out, T_ACK);
            out.extend_from_slice(&worker.to_le_bytes());
            out.extend_from_slice(&seq.to_le_bytes());
            finish(out, at);
        }
        Msg::Heartbeat(h) => {
            let at = begin(out, T_HEARTBEAT);
            out.extend_from_slice(&h.epoch.to_le_bytes());
            out.push(h.role);
            out.push(h.in_sync as u8);
            for v in [h.token, h.lag_records, h.lag_us, h.flows] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            finish(out, at);
        }
        Msg::Snapshot { token } => u64_msg(out, T_SNAPSHOT, *token),
        Msg::Handover { epoch } => u64_msg(out, T_HANDOVER, *epoch),
        Msg::Takeover { epoch } => u64_msg(out, T_TAKEOVER, *epoch),
        Msg::Refused { reason } => {
            let at = begin(out, T_REFUSED);
            out.extend_from_slice(reason.as_bytes());
            finish(out, at);
        }
        Msg::Pool(t) => {
            let at = begin(out, T_POOL);
            out.extend_from_slice(&u32::from(t.vip).to_le_bytes());
            out.extend_from_slice(&t.port.to_le_bytes());
            out.extend_from_slice(&t.version.to_le_bytes());
            out.extend_from_slice(&(t.slots.len() as u16).to_le_bytes());
            for sl in &t.slots {
                out.push(sl.admin);
                out.extend_from_slice(&u32::from(*sl.addr.ip()).to_le_bytes());
                out.extend_from_slice(&sl.addr.port().to_le_bytes());
                out.extend_from_slice(&(sl.weight.min(u32::from(u16::MAX)) as u16).to_le_bytes());
                out.extend_from_slice(&sl.pools.to_le_bytes());
                out.push(sl.in_default as u8);
                out.push(sl.health);
            }
            finish(out, at);
        }
    }
}

fn u64_msg(out: &mut Vec<u8>, t: u8, v: u64) {
    let at = begin(out, t);
    out.extend_from_slice(&v.to_le_bytes());
    finish(out, at);
}

fn begin_batch(
    out: &mut Vec<u8>,
    worker: u16,
    first_seq: u64,
    last_seq: u64,
    nrec: usize,
) -> usize {
    let at = begin(out, T_BATCH);
    out.extend_from_slice(&worker.to_le_bytes());
    out.extend_from_slice(&first_seq.to_le_bytes());
    out.extend_from_slice(&last_seq.to_le_bytes());
    out.extend_from_slice(&(nrec as u32).to_le_bytes());
    at
}

/// Appends a `Batch` frame straight from ring records (no intermediate byte buffer).
pub fn encode_batch(
    out: &mut Vec<u8>,
    worker: u16,
    first_seq: u64,
    last_seq: u64,
    recs: &[Record],
) {
    let at = begin_batch(out, worker, first_seq, last_seq, recs.len());
    out.reserve(recs.len() * RECORD_BYTES);
    for r in recs {
        for w in r {
            out.extend_from_slice(&w.to_le_bytes());
        }
    }
    finish(out, at);
}

/// Converts a `Batch`'s record bytes back into ring records.
pub fn batch_records(bytes: &[u8], out: &mut Vec<Record>) {
    out.clear();
    for rb in bytes.chunks_exact(RECORD_BYTES) {
        let mut r: Record = [0; RECORD_WORDS];
        for (w, b) in r.iter_mut().zip(rb.chunks_exact(8)) {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            *w = u64::from_le_bytes(a);
        }
        out.push(r);
    }
}

// ---- decode -------------------------------------------------------------------------

struct Rd<'a> {
    b: &'a [u8],
    what: &'static str,
}

impl<'a> Rd<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        if self.b.len() < n {
            return Err(ProtoError::Body(self.what));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, ProtoError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, ProtoError> {
        Ok(u16::from_le_bytes(self.arr()?))
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N], ProtoError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u32(&mut self) -> Result<u32, ProtoError> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    fn u64(&mut self) -> Result<u64, ProtoError> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
}

/// Decodes the frame at the front of `buf`: `Ok(None)` if it is not complete yet, else the
/// message and the bytes it used.
pub fn decode(buf: &[u8]) -> Result<Option<(Msg<'_>, usize)>, ProtoError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(ProtoError::FrameLength(len));
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    let t = buf[4];
    let body = &buf[5..4 + len];
    let msg = decode_body(t, body)?;
    Ok(Some((msg, 4 + len)))
}

fn decode_body(t: u8, body: &[u8]) -> Result<Msg<'_>, ProtoError> {
    Ok(match t {
        T_HELLO => {
            let mut r = Rd {
                b: body,
                what: "Hello",
            };
            let magic = r.u32()?;
            let version = r.u16()?;
            // Another version may lay out the rest differently: stop here and let
            // `Hello::check` refuse it by name.
            if magic != MAGIC || version != PROTO_VERSION {
                return Ok(Msg::Hello(Hello {
                    magic,
                    version,
                    node_id: 0,
                    epoch: 0,
                    role: Role::Fenced,
                    mode: 0,
                    workers: 0,
                    heartbeat_us: 0,
                    dead_after: 0,
                    fence_hold_us: 0,
                    handover_hold_us: 0,
                    groups: 0,
                    session: 0,
                    secret: [0; 16],
                }));
            }
            let node_id = r.u32()?;
            let epoch = r.u64()?;
            let role = Role::from_u8(r.u8()?).ok_or(ProtoError::Body("Hello role"))?;
            let mode = r.u8()?;
            let workers = r.u16()?;
            let heartbeat_us = r.u32()?;
            let dead_after = r.u32()?;
            let fence_hold_us = r.u32()?;
            let handover_hold_us = r.u32()?;
            let groups = r.u64()?;
            let session = r.u64()?;
            let mut secret = [0u8; 16];
            for b in &mut secret {
                *b = r.u8()?;
            }
            Msg::Hello(Hello {
                magic,
                version,
                node_id,
                epoch,
                role,
                mode,
                workers,
                heartbeat_us,
                dead_after,
                fence_hold_us,
                handover_hold_us,
                groups,
                session,
                secret,
            })
        }
        T_BATCH => {
            let mut r = Rd {
                b: body,
                what: "Batch",
            };
            let worker = r.u16()?;
            let first_seq = r.u64()?;
            let last_seq = r.u64()?;
            let n = r.u32()? as usize;
            let records = r.take(
                n.checked_mul(RECORD_BYTES)
                    .ok_or(ProtoError::Body("Batch"))?,
            )?;
            if !r.b.is_empty() {
                return Err(ProtoError::Body("Batch (trailing bytes)"));
            }
            Msg::Batch {
                worker,
                first_seq,
                last_seq,
                records,
            }
        }
        T_ACK => {
            let mut r = Rd {
                b: body,
                what: "Ack",
            };
            Msg::Ack {
                worker: r.u16()?,
                seq: r.u64()?,
            }
        }
        T_HEARTBEAT => {
            let mut r = Rd {
                b: body,
                what: "Heartbeat",
            };
            Msg::Heartbeat(Heartbeat {
                epoch: r.u64()?,
                role: r.u8()?,
                in_sync: r.u8()? != 0,
                token: r.u64()?,
                lag_records: r.u64()?,
                lag_us: r.u64()?,
                flows: r.u64()?,
            })
        }
        T_SNAPSHOT => Msg::Snapshot {
            token: Rd {
                b: body,
                what: "Snapshot",
            }
            .u64()?,
        },
        T_HANDOVER => Msg::Handover {
            epoch: Rd {
                b: body,
                what: "Handover",
            }
            .u64()?,
        },
        T_TAKEOVER => Msg::Takeover {
            epoch: Rd {
                b: body,
                what: "Takeover",
            }
            .u64()?,
        },
        T_REFUSED => Msg::Refused {
            reason: String::from_utf8_lossy(body).into_owned(),
        },
        T_POOL => {
            let mut r = Rd { b: body, what: "Pool" };
            let vip = std::net::Ipv4Addr::from(r.u32()?);
            let port = r.u16()?;
            let version = r.u64()?;
            let n = usize::from(r.u16()?);
            if r.b.len() != n * POOL_SLOT_BYTES {
                return Err(ProtoError::Body("Pool (slot count)"));
            }
            let mut slots = Vec::with_capacity(n);
            for _ in 0..n {
                let admin = r.u8()?;
                let ip = std::net::Ipv4Addr::from(r.u32()?);
                let p = r.u16()?;
                let weight = u32::from(r.u16()?);
                let pools = r.u64()?;
                let in_default = match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(ProtoError::Body("Pool (in_default)")),
                };
                let health = r.u8()?;
                if health > 2 {
                    return Err(ProtoError::Body("Pool (health)"));
                }
                slots.push(SlotImage { admin, addr: std::net::SocketAddrV4::new(ip, p), weight, pools, in_default, health });
            }
            Msg::Pool(PoolTable { vip, port, version, slots })
        }
        t => return Err(ProtoError::Type(t)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(m: Msg<'_>) {
        let mut b = Vec::new();
        encode(&m, &mut b);
        let (d, used) = decode(&b).unwrap().unwrap();
        assert_eq!(used, b.len());
        assert_eq!(d, m);
        // Every strict prefix is "incomplete", never an error.
        for k in 0..b.len() {
            assert_eq!(decode(&b[..k]).unwrap(), None);
        }
    }

    #[test]
    fn messages_roundtrip() {
        roundtrip(Msg::Hello(Hello {
            magic: MAGIC,
            version: PROTO_VERSION,
            node_id: 7,
            epoch: 3,
            role: Role::Standby,
            mode: 1,
            workers: 2,
            heartbeat_us: 5000,
            dead_after: 3,
            fence_hold_us: 30_000,
            handover_hold_us: 500_000,
            groups: 0x1234_5678_9abc_def0,
            session: 0b1010,
            secret: *b"0123456789abcdef",
        }));
        let recs = [7u8; 128];
        roundtrip(Msg::Batch {
            worker: 1,
            first_seq: 10,
            last_seq: 12,
            records: &recs,
        });
        roundtrip(Msg::Ack {
            worker: 3,
            seq: u64::MAX - 1,
        });
        roundtrip(Msg::Heartbeat(Heartbeat {
            epoch: 1,
            role: 2,
            in_sync: true,
            token: 9,
            lag_records: 4,
            lag_us: 5,
            flows: 6,
        }));
        roundtrip(Msg::Snapshot { token: 5 });
        roundtrip(Msg::Handover { epoch: 5 });
        roundtrip(Msg::Takeover { epoch: 6 });
        roundtrip(Msg::Refused {
            reason: "no".into(),
        });
        let slot = |admin, last, weight, pools, in_default| SlotImage {
            admin,
            addr: std::net::SocketAddrV4::new(std::net::Ipv4Addr::new(10, 0, 0, last), 80),
            weight,
            pools,
            in_default,
            health: last % 3,
        };
        roundtrip(Msg::Pool(PoolTable {
            vip: std::net::Ipv4Addr::new(198, 18, 0, 100),
            port: 8080,
            version: 7,
            slots: vec![slot(1, 11, 1, 0, true), slot(2, 12, 256, 1 << 63, false), slot(0, 0, 1, 0, false)],
        }));
        roundtrip(Msg::Pool(PoolTable { vip: std::net::Ipv4Addr::UNSPECIFIED, port: 1, version: 0, slots: Vec::new() }));
    }

    #[test]
    fn other_version_is_named() {
        let mut b = Vec::new();
        let mut h = Hello {
            magic: MAGIC,
            version: PROTO_VERSION + 1,
            node_id: 1,
            epoch: 1,
            role: Role::Active,
            mode: 0,
            workers: 1,
            heartbeat_us: 1,
            dead_after: 3,
            fence_hold_us: 30_000,
            handover_hold_us: 500_000,
            groups: 0,
            session: 1,
            secret: [0; 16],
        };
        encode(&Msg::Hello(h), &mut b);
        let Msg::Hello(got) = decode(&b).unwrap().unwrap().0 else {
            panic!()
        };
        let e = got.check().unwrap_err();
        assert!(
            e.contains(&format!("version {}", PROTO_VERSION + 1))
                && e.contains(&format!("version {PROTO_VERSION}")),
            "{e}"
        );
        h.version = PROTO_VERSION;
        assert!(h.check().is_ok());
    }

    /// A Hello of version 8, the layout before `fence_hold_us` and `handover_hold_us`
    /// (shorter, so its fields after `dead_after` would be misread), decodes to what
    /// `Hello::check` refuses naming both versions.
    #[test]
    fn a_version_8_hello_is_refused_by_name() {
        let mut body = vec![T_HELLO];
        body.extend_from_slice(&MAGIC.to_le_bytes());
        body.extend_from_slice(&8u16.to_le_bytes());
        body.extend_from_slice(&7u32.to_le_bytes()); // node_id
        body.extend_from_slice(&3u64.to_le_bytes()); // epoch
        body.extend_from_slice(&[Role::Standby as u8, 0]); // role, mode
        body.extend_from_slice(&2u16.to_le_bytes()); // workers
        body.extend_from_slice(&5000u32.to_le_bytes()); // heartbeat_us
        body.extend_from_slice(&3u32.to_le_bytes()); // dead_after
        body.extend_from_slice(&0u64.to_le_bytes()); // groups
        body.extend_from_slice(&1u64.to_le_bytes()); // session
        body.extend_from_slice(&[0; 16]); // secret
        let mut b = (body.len() as u32).to_le_bytes().to_vec();
        b.extend_from_slice(&body);
        let (Msg::Hello(got), used) = decode(&b).unwrap().unwrap() else { panic!() };
        assert_eq!((got.version, used), (8, b.len()));
        let e = got.check().unwrap_err();
        assert!(e.contains("peer speaks version 8") && e.contains(&format!("this engine speaks version {PROTO_VERSION}")), "{e}");
    }

    #[test]
    fn bad_pool_tables_error() {
        let mut b = Vec::new();
        encode(&Msg::Pool(PoolTable { vip: std::net::Ipv4Addr::LOCALHOST, port: 1, version: 1, slots: Vec::new() }), &mut b);
        // Claim a slot that is not there, then one too many bytes.
        b[4 + 1 + 14] = 1;
        assert_eq!(decode(&b), Err(ProtoError::Body("Pool (slot count)")));
    }

    #[test]
    fn bad_frames_error() {
        assert_eq!(decode(&[0, 0, 0, 0, 1]), Err(ProtoError::FrameLength(0)));
        assert!(matches!(
            decode(&[1, 0, 0, 0, 99]),
            Err(ProtoError::Type(99))
        ));
        assert!(matches!(
            decode(&[2, 0, 0, 0, T_ACK, 1]),
            Err(ProtoError::Body(_))
        ));
    }
}
