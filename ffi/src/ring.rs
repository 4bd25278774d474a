//! `rte_ring` of mbufs: for in-process `net_ring` ports (deterministic tests) and handing
//! packets between lcores.
//!
//! A [`Ring`] is one owner's handle (both ends, `&mut self`). To hand packets from one lcore
//! to another, [`Ring::split`] it into a [`RingProducer`] and a [`RingConsumer`]: exactly one
//! of each exists per ring (neither is `Clone`), each is `Send`, and both take `&mut self`, so
//! a single-producer/single-consumer ring is only ever entered by one enqueuer and one
//! dequeuer at a time — the contract `RING_F_SP_ENQ | RING_F_SC_DEQ` requires.

use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::mbuf::MbufBurst;
use crate::{sys, Eal, PortId};

/// The raw ring, shared (by `Arc`) between the two halves of a split ring.
struct RawRing {
    ptr: NonNull<sys::rte_ring>,
    name: String,
}

// SAFETY: an rte_ring lives in DPDK shared memory and is designed to be used from several
// lcores. `RawRing` itself exposes no operation: every enqueue/dequeue goes through a `Ring`,
// `RingProducer` or `RingConsumer` taking `&mut self`, and the split API guarantees at most one
// enqueuing handle and one dequeuing handle exist, so sharing the pointer between two threads
// never lets two threads run the same (single-producer or single-consumer) side at once.
unsafe impl Send for RawRing {}
// SAFETY: as above: `&RawRing` gives access to nothing but the name and the (thread-safe,
// read-only) count query.
unsafe impl Sync for RawRing {}

impl RawRing {
    fn count(&self) -> u32 {
        // SAFETY: read-only query, safe concurrently with one producer and one consumer.
        unsafe { sys::ft_ring_count(self.ptr.as_ptr()) }
    }

    /// Enqueue from the front of `burst`. Caller: the ring's only producer at this moment.
    fn enqueue(&self, burst: &mut MbufBurst) -> usize {
        let (head, len) = burst.raw_head();
        if len == 0 {
            return 0;
        }
        // SAFETY: the first len slots are owned mbufs; the ring takes ownership of the first n.
        // The caller holds the only producer handle (&mut), so SP enqueue is not raced.
        let n = unsafe { sys::ft_ring_enqueue_burst(self.ptr.as_ptr(), head as *const *mut std::ffi::c_void, len as u32, std::ptr::null_mut()) }
            as usize;
        burst.consume_front(n.min(len));
        n
    }

    /// Dequeue into the tail of `burst`. Caller: the ring's only consumer at this moment.
    fn dequeue(&self, burst: &mut MbufBurst) -> usize {
        let (tail, room) = burst.raw_tail();
        if room == 0 {
            return 0;
        }
        // SAFETY: `tail` has `room` free slots; the ring holds only mbufs (our API enqueues
        // nothing else), which we then own. The caller holds the only consumer handle (&mut).
        let n = unsafe { sys::ft_ring_dequeue_burst(self.ptr.as_ptr(), tail as *mut *mut std::ffi::c_void, room as u32, std::ptr::null_mut()) }
            as usize;
        burst.grew(n);
        n
    }
}

impl Drop for RawRing {
    fn drop(&mut self) {
        // Last handle gone (no producer, no consumer): free the mbufs still queued, then the
        // ring. Rings must be dropped before the Eal (as every owner in flowtwin does: workers
        // are joined, and their handles dropped, before EAL cleanup).
        let mut b = MbufBurst::new();
        while self.dequeue(&mut b) > 0 {
            b.clear();
        }
        // SAFETY: no handle references the ring any more (we are the last Arc / the owner),
        // and it is empty; rte_ring_free releases its memzone exactly once.
        unsafe { sys::rte_ring_free(self.ptr.as_ptr()) };
    }
}

/// A ring carrying mbufs, owned by one handle (both ends). Dropping it frees the mbufs it
/// still holds and the ring.
pub struct Ring {
    raw: RawRing,
    spsc: bool,
}

/// The enqueue end of a split ring. Exactly one exists per ring; not `Clone`.
pub struct RingProducer {
    raw: Arc<RawRing>,
}

/// The dequeue end of a split ring. Exactly one exists per ring; not `Clone`.
pub struct RingConsumer {
    raw: Arc<RawRing>,
}

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
            .map(|ptr| Ring { raw: RawRing { ptr, name: name.to_owned() }, spsc: single_producer_consumer })
            .ok_or_else(|| Error::last(format!("rte_ring_create({name}, {count})")))
    }

    pub fn name(&self) -> &str {
        &self.raw.name
    }

    /// Whether the ring was created single-producer/single-consumer.
    pub fn is_spsc(&self) -> bool {
        self.spsc
    }

    /// Move as many mbufs of `burst` as fit into the ring; returns how many moved.
    pub fn enqueue_burst(&mut self, burst: &mut MbufBurst) -> usize {
        self.raw.enqueue(burst)
    }

    /// Move up to `burst.room()` mbufs from the ring into `burst`.
    pub fn dequeue_burst(&mut self, burst: &mut MbufBurst) -> usize {
        self.raw.dequeue(burst)
    }

    pub fn count(&self) -> u32 {
        self.raw.count()
    }

    /// Split into its two ends, to be used on two lcores: one producer, one consumer. The
    /// ring (and any mbufs still in it) is freed when both are dropped.
    pub fn split(self) -> (RingProducer, RingConsumer) {
        let raw = Arc::new(self.raw);
        (RingProducer { raw: raw.clone() }, RingConsumer { raw })
    }

    fn as_ptr(&self) -> *mut sys::rte_ring {
        self.raw.ptr.as_ptr()
    }
}

impl RingProducer {
    pub fn name(&self) -> &str {
        &self.raw.name
    }

    /// Move as many mbufs from the front of `burst` as fit; returns how many moved. What did
    /// not fit stays in `burst`, in order (never blocks).
    #[inline]
    pub fn enqueue_burst(&mut self, burst: &mut MbufBurst) -> usize {
        self.raw.enqueue(burst)
    }

    /// Mbufs waiting in the ring (approximate while the consumer runs).
    pub fn count(&self) -> u32 {
        self.raw.count()
    }
}

impl RingConsumer {
    pub fn name(&self) -> &str {
        &self.raw.name
    }

    /// Move up to `burst.room()` mbufs from the ring into `burst` (never blocks).
    #[inline]
    pub fn dequeue_burst(&mut self, burst: &mut MbufBurst) -> usize {
        self.raw.dequeue(burst)
    }

    /// Mbufs waiting in the ring (approximate while the producer runs).
    pub fn count(&self) -> u32 {
        self.raw.count()
    }
}

/// Create an ethdev (`net_ring` driver) whose RX queues read `rx` and TX queues write `tx`.
/// The rings are leaked on purpose: the port references them for the rest of the process.
pub fn eth_from_rings(_eal: &Eal, name: &str, rx: Vec<Ring>, tx: Vec<Ring>) -> Result<PortId> {
    let c = CString::new(name).map_err(|_| Error::invalid("rte_eth_from_rings", "name contains NUL"))?;
    let rxp: Vec<*mut sys::rte_ring> = rx.iter().map(Ring::as_ptr).collect();
    let txp: Vec<*mut sys::rte_ring> = tx.iter().map(Ring::as_ptr).collect();
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
