//! `rte_ring` of mbufs: for in-process `net_ring` ports (deterministic tests) and handing
//! packets between lcores.

use std::ffi::CString;
use std::ptr::NonNull;

use crate::error::{Error, Result};
use crate::mbuf::MbufBurst;
use crate::{sys, Eal, PortId};

/// A single-producer/single-consumer (or MP/MC) ring carrying mbufs.
pub struct Ring {
    raw: NonNull<sys::rte_ring>,
    name: String,
}

// SAFETY: rte_ring is a lock-free queue designed for use between lcores. With SP/SC flags the
// caller must keep one producer and one consumer; our API takes &mut self for both sides.
unsafe impl Send for Ring {}

impl Ring {
    /// Create a ring of `count` slots (a power of two; usable capacity count-1).
    pub fn new(_eal: &Eal, name: &str, count: u32, single_producer_consumer: bool) -> Result<Ring> {
        if !count.is_power_of_two() {
            return Err(Error::invalid("rte_ring_create", format!("ring size {count} is not a power of two")));
        }
        let c = CString::new(name).map_err(|_| Error::invalid("rte_ring_create", "name contains NUL"))?;
        // SAFETY: reading shim constants.
        let flags = if single_producer_consumer { unsafe { sys::FT_RING_F_SP_ENQ | sys::FT_RING_F_SC_DEQ } } else { 0 };
        // SAFETY: reading a shim constant.
        let any = unsafe { sys::FT_SOCKET_ID_ANY };
        // SAFETY: valid name; DPDK copies it.
        let p = unsafe { sys::rte_ring_create(c.as_ptr(), count, any, flags) };
        NonNull::new(p)
            .map(|raw| Ring { raw, name: name.to_owned() })
            .ok_or_else(|| Error::last(format!("rte_ring_create({name}, {count})")))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Move as many mbufs of `burst` as fit into the ring; returns how many moved.
    pub fn enqueue_burst(&mut self, burst: &mut MbufBurst) -> usize {
        let (head, len) = burst.raw_head();
        // SAFETY: the first len slots are owned mbufs; the ring takes ownership of the first n.
        let n = unsafe {
            sys::ft_ring_enqueue_burst(self.raw.as_ptr(), head as *const *mut std::ffi::c_void, len as u32, std::ptr::null_mut())
        } as usize;
        burst.consume_front(n.min(len));
        n
    }

    /// Move up to `burst.room()` mbufs from the ring into `burst`.
    pub fn dequeue_burst(&mut self, burst: &mut MbufBurst) -> usize {
        let (tail, room) = burst.raw_tail();
        // SAFETY: `tail` has `room` free slots; the ring holds only mbufs (our API enqueues
        // nothing else), which we then own.
        let n = unsafe {
            sys::ft_ring_dequeue_burst(self.raw.as_ptr(), tail as *mut *mut std::ffi::c_void, room as u32, std::ptr::null_mut())
        } as usize;
        burst.grew(n);
        n
    }

    pub fn count(&self) -> u32 {
        // SAFETY: read-only query.
        unsafe { sys::ft_ring_count(self.raw.as_ptr()) }
    }
}

/// Create an ethdev (`net_ring` driver) whose RX queues read `rx` and TX queues write `tx`.
/// The rings are leaked on purpose: the port references them for the rest of the process.
pub fn eth_from_rings(_eal: &Eal, name: &str, rx: Vec<Ring>, tx: Vec<Ring>) -> Result<PortId> {
    let c = CString::new(name).map_err(|_| Error::invalid("rte_eth_from_rings", "name contains NUL"))?;
    let rxp: Vec<*mut sys::rte_ring> = rx.iter().map(|r| r.raw.as_ptr()).collect();
    let txp: Vec<*mut sys::rte_ring> = tx.iter().map(|r| r.raw.as_ptr()).collect();
    // SAFETY: reading a shim constant.
    let any = unsafe { sys::FT_SOCKET_ID_ANY };
    // SAFETY: arrays of valid ring pointers that stay alive forever (forgotten below).
    let r = unsafe {
        sys::rte_eth_from_rings(c.as_ptr(), rxp.as_ptr(), rxp.len() as u32, txp.as_ptr(), txp.len() as u32, any as u32)
    };
    if r < 0 {
        return Err(Error::last(format!("rte_eth_from_rings({name})")));
    }
    std::mem::forget(rx);
    std::mem::forget(tx);
    Ok(PortId(r as u16))
}
