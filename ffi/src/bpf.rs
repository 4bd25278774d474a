//! tcpdump filter expressions for the engine's packet capture (`flowtwin ctl capture`):
//! libpcap's compiler turns the expression into classic BPF once, and its interpreter
//! (`pcap_offline_filter`, reentrant) runs it on each frame. The same syntax and meaning as
//! `tcpdump EXPR` on an Ethernet interface.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};

#[repr(C)]
struct BpfProgram {
    bf_len: c_uint,
    bf_insns: *mut c_void,
}

#[repr(C)]
struct PcapPkthdr {
    ts_sec: libc::c_long,
    ts_usec: libc::c_long,
    caplen: u32,
    len: u32,
}

const DLT_EN10MB: c_int = 1;
const PCAP_NETMASK_UNKNOWN: u32 = 0xffff_ffff;

#[link(name = "pcap")]
extern "C" {
    fn pcap_open_dead(linktype: c_int, snaplen: c_int) -> *mut c_void;
    fn pcap_close(p: *mut c_void);
    fn pcap_geterr(p: *mut c_void) -> *mut c_char;
    fn pcap_compile(p: *mut c_void, fp: *mut BpfProgram, s: *const c_char, optimize: c_int, netmask: u32) -> c_int;
    fn pcap_freecode(fp: *mut BpfProgram);
    fn pcap_offline_filter(fp: *const BpfProgram, h: *const PcapPkthdr, pkt: *const u8) -> c_int;
}

/// A compiled filter.
pub struct BpfFilter {
    prog: BpfProgram,
    expr: String,
}

// SAFETY: the program is immutable after `pcap_compile`; `pcap_offline_filter` only reads it
// (libpcap's `bpf_filter` keeps its state on the stack), so it may run on several threads.
unsafe impl Send for BpfFilter {}
unsafe impl Sync for BpfFilter {}

impl BpfFilter {
    /// Compile `expr` (tcpdump syntax) for Ethernet frames; the error is libpcap's, with the
    /// expression.
    pub fn compile(expr: &str) -> Result<BpfFilter, String> {
        let c = CString::new(expr).map_err(|_| format!("filter {expr:?}: contains a NUL byte"))?;
        // SAFETY: a "dead" handle needs no device; it only carries the link type for the
        // compiler and is closed before returning. `prog` is written by pcap_compile on
        // success and freed by Drop.
        unsafe {
            let p = pcap_open_dead(DLT_EN10MB, 65535);
            if p.is_null() {
                return Err("libpcap: pcap_open_dead failed".into());
            }
            let mut prog = BpfProgram { bf_len: 0, bf_insns: std::ptr::null_mut() };
            let rc = pcap_compile(p, &mut prog, c.as_ptr(), 1, PCAP_NETMASK_UNKNOWN);
            let r = if rc != 0 {
                let e = CStr::from_ptr(pcap_geterr(p)).to_string_lossy().into_owned();
                Err(format!("filter {expr:?}: {e}"))
            } else {
                Ok(BpfFilter { prog, expr: expr.to_string() })
            };
            pcap_close(p);
            r
        }
    }

    /// Whether `frame` (a whole Ethernet frame) passes.
    #[inline]
    pub fn matches(&self, frame: &[u8]) -> bool {
        let len = frame.len() as u32;
        let h = PcapPkthdr { ts_sec: 0, ts_usec: 0, caplen: len, len };
        // SAFETY: the program is valid (compiled, not freed); the interpreter reads at most
        // `caplen` bytes of `frame`, which is that long.
        unsafe { pcap_offline_filter(&self.prog, &h, frame.as_ptr()) != 0 }
    }

    /// The expression it was compiled from.
    pub fn expr(&self) -> &str {
        &self.expr
    }
}

impl Drop for BpfFilter {
    fn drop(&mut self) {
        // SAFETY: compiled by pcap_compile, freed once.
        unsafe { pcap_freecode(&mut self.prog) }
    }
}

impl std::fmt::Debug for BpfFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BpfFilter({:?})", self.expr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ethernet/IPv4/TCP from 198.18.0.2:40000 to 198.18.0.100:`dport`.
    fn tcp_frame(dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 54];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&40u16.to_be_bytes());
        f[23] = 6;
        f[26..30].copy_from_slice(&[198, 18, 0, 2]);
        f[30..34].copy_from_slice(&[198, 18, 0, 100]);
        f[34..36].copy_from_slice(&40000u16.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f[46] = 0x50;
        f
    }

    #[test]
    fn tcpdump_expressions_match_as_tcpdump_would() {
        let f = BpfFilter::compile("tcp port 80 and host 198.18.0.100").unwrap();
        assert!(f.matches(&tcp_frame(80)));
        assert!(!f.matches(&tcp_frame(7)));
        assert!(!BpfFilter::compile("arp").unwrap().matches(&tcp_frame(80)));
        assert!(BpfFilter::compile("").unwrap().matches(&tcp_frame(7)), "empty: everything");
        assert!(!f.matches(&[0u8; 3]), "a runt frame does not match (and is not read past)");
        let e = BpfFilter::compile("tcp portt 80").unwrap_err();
        assert!(e.contains("tcp portt 80") && e.contains("syntax"), "{e}");
    }
}
