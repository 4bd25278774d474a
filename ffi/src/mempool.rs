//! Packet-buffer mempools (`rte_pktmbuf_pool_create`).

use std::ffi::CString;
use std::ptr::NonNull;

use crate::error::{Error, Result};
use crate::mbuf::{Mbuf, MbufBurst};
use crate::{sys, Eal};

/// A pool of packet mbufs. Multi-producer/multi-consumer safe, so it is shared by reference
/// between lcores.
pub struct Mempool {
    raw: NonNull<sys::rte_mempool>,
    name: String,
}

// SAFETY: rte_mempool is designed for concurrent use from many lcores (per-lcore caches plus a
// lock-free common pool); the pointer itself is never mutated by us.
unsafe impl Send for Mempool {}
// SAFETY: as above; all operations through &Mempool are thread-safe in DPDK.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Create a pool of `n` mbufs with `data_room` bytes each (headroom included; DPDK's
    /// default is 2048 + 128) and a per-lcore cache of `cache` mbufs, on NUMA `socket`
    /// (-1 = any).
    pub fn new(_eal: &Eal, name: &str, n: u32, cache: u32, data_room: u16, socket: i32) -> Result<Mempool> {
        let cname = CString::new(name)
            .map_err(|_| Error::invalid("rte_pktmbuf_pool_create", "pool name contains NUL"))?;
        // SAFETY: cname is a valid C string for the call; DPDK copies the name.
        let p = unsafe { sys::rte_pktmbuf_pool_create(cname.as_ptr(), n, cache, 0, data_room, socket) };
        match NonNull::new(p) {
            Some(raw) => Ok(Mempool { raw, name: name.to_owned() }),
            None => Err(Error::last(format!("rte_pktmbuf_pool_create({name}, {n} mbufs)")).with_hint(
                "not enough DPDK memory: lower the mbuf count, or raise -m (with --no-huge) / hugepages (scripts/setup)",
            )),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::rte_mempool {
        self.raw.as_ptr()
    }

    /// Allocate one mbuf (reset, empty). `None` when the pool is exhausted.
    #[inline]
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: the pool is valid for our lifetime; the returned mbuf is owned by the caller.
        let m = unsafe { sys::ft_pktmbuf_alloc(self.raw.as_ptr()) };
        NonNull::new(m).map(Mbuf::from_raw_nonnull)
    }

    /// Fill `burst` up to `n` more mbufs (all or nothing). Returns false when the pool cannot
    /// supply them.
    #[inline]
    pub fn alloc_bulk(&self, burst: &mut MbufBurst, n: usize) -> bool {
        if n > burst.room() {
            return false;
        }
        let (tail, _) = burst.raw_tail();
        // SAFETY: `tail` points at `room() >= n` free slots; on success DPDK fills exactly n
        // with mbufs the burst then owns.
        let r = unsafe { sys::ft_pktmbuf_alloc_bulk(self.raw.as_ptr(), tail, n as u32) };
        if r == 0 {
            burst.grew(n);
            true
        } else {
            false
        }
    }

    /// Data room of each mbuf (headroom included).
    pub fn data_room(&self) -> u16 {
        // SAFETY: reads the pool's private data.
        unsafe { sys::ft_pktmbuf_data_room_size(self.raw.as_ptr()) }
    }

    /// Mbufs currently free in the pool (approximate under concurrency).
    pub fn available(&self) -> u32 {
        // SAFETY: read-only query.
        unsafe { sys::ft_mempool_avail_count(self.raw.as_ptr()) }
    }

    /// Mbufs currently allocated (in flight in rings, queues or owned by the application).
    pub fn in_use(&self) -> u32 {
        // SAFETY: read-only query.
        unsafe { sys::rte_mempool_in_use_count(self.raw.as_ptr()) }
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        // Freeing a pool whose mbufs are still referenced (by a started port's descriptor
        // rings, or an Mbuf someone kept) would be a use-after-free. Only free an idle pool;
        // otherwise leave it to process exit.
        if self.in_use() == 0 {
            // SAFETY: no mbuf of this pool is outstanding, so nothing can reference it.
            unsafe { sys::rte_mempool_free(self.raw.as_ptr()) };
        }
    }
}
