//! Parsed, owned representations shared by the wire parsers/emitters (`wire::tcp`) and the
//! sans-IO TCP core (`tcp`). Plain `Copy` data: no references into packet buffers.

use crate::seq::SeqNum;

/// TCP header flags (RFC 9293 §3.1; ECE/CWR from RFC 3168 are parsed but unused).
#[derive(Copy, Clone, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: TcpFlags = TcpFlags(0x01);
    pub const SYN: TcpFlags = TcpFlags(0x02);
    pub const RST: TcpFlags = TcpFlags(0x04);
    pub const PSH: TcpFlags = TcpFlags(0x08);
    pub const ACK: TcpFlags = TcpFlags(0x10);
    pub const URG: TcpFlags = TcpFlags(0x20);
    pub const ECE: TcpFlags = TcpFlags(0x40);
    pub const CWR: TcpFlags = TcpFlags(0x80);

    #[inline]
    pub fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }
    #[inline]
    pub fn fin(self) -> bool {
        self.0 & 0x01 != 0
    }
    #[inline]
    pub fn syn(self) -> bool {
        self.0 & 0x02 != 0
    }
    #[inline]
    pub fn rst(self) -> bool {
        self.0 & 0x04 != 0
    }
    #[inline]
    pub fn psh(self) -> bool {
        self.0 & 0x08 != 0
    }
    #[inline]
    pub fn ack(self) -> bool {
        self.0 & 0x10 != 0
    }
    #[inline]
    pub fn urg(self) -> bool {
        self.0 & 0x20 != 0
    }
}

impl core::ops::BitOr for TcpFlags {
    type Output = TcpFlags;
    #[inline]
    fn bitor(self, o: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | o.0)
    }
}

impl core::fmt::Debug for TcpFlags {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        const NAMES: [&str; 8] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];
        let mut first = true;
        for (i, n) in NAMES.iter().enumerate() {
            if self.0 & (1 << i) != 0 {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(n)?;
                first = false;
            }
        }
        if first {
            f.write_str("-")?;
        }
        Ok(())
    }
}

/// Maximum SACK blocks carried in one segment (RFC 2018 §3: at most 4 fit in 40 option bytes,
/// 3 when timestamps are also present).
pub const MAX_SACK_BLOCKS: usize = 4;

/// A SACK block `[left, right)` (RFC 2018 §3).
#[derive(Copy, Clone, PartialEq, Eq, Debug, Default)]
pub struct SackBlock {
    pub left: SeqNum,
    pub right: SeqNum,
}

/// The TCP options flowtwin understands. Unknown options are skipped on input and never emitted.
#[derive(Copy, Clone, PartialEq, Eq, Debug, Default)]
pub struct TcpOptions {
    /// Maximum segment size (RFC 9293 §3.7.1); only valid on SYN.
    pub mss: Option<u16>,
    /// Window scale shift count (RFC 7323 §2); only valid on SYN.
    pub wscale: Option<u8>,
    /// SACK permitted (RFC 2018 §2); only valid on SYN.
    pub sack_permitted: bool,
    /// Timestamps `(TSval, TSecr)` (RFC 7323 §3).
    pub timestamps: Option<(u32, u32)>,
    /// SACK blocks (RFC 2018 §3); the first `sack_count` entries are valid.
    pub sack_blocks: [SackBlock; MAX_SACK_BLOCKS],
    pub sack_count: u8,
}

impl TcpOptions {
    /// The valid SACK blocks.
    #[inline]
    pub fn sacks(&self) -> &[SackBlock] {
        &self.sack_blocks[..(self.sack_count as usize).min(MAX_SACK_BLOCKS)]
    }
}

/// A TCP header without addresses or payload: what the TCP state machine reads and writes.
#[derive(Copy, Clone, PartialEq, Eq, Debug, Default)]
pub struct TcpHeader {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: SeqNum,
    pub ack: SeqNum,
    pub flags: TcpFlags,
    /// The raw (unscaled) 16-bit window field.
    pub window: u16,
    pub options: TcpOptions,
}
