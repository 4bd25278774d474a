//! Owned mbufs and fixed-size bursts of them.
//!
//! Ownership is the safety argument: an [`Mbuf`] or a slot of an [`MbufBurst`] is owned by
//! exactly one Rust value, freed exactly once (on drop, or handed to DPDK by a TX burst, after
//! which we no longer hold it). Only single-segment access is offered: a multi-segment mbuf's
//! first segment is what `data()` shows, and `is_contiguous()` tells the caller to drop it.

use std::ptr::NonNull;

use crate::mempool::Mempool;
use crate::sys;

/// The largest burst flowtwin moves at once (testpmd's default burst is 32).
pub const BURST_MAX: usize = 32;

/// One owned packet buffer. Freed on drop.
pub struct Mbuf {
    raw: NonNull<sys::rte_mbuf>,
}

// SAFETY: an mbuf is plain memory owned by whoever holds the pointer; moving it to another
// lcore is how DPDK pipelines work. We never alias it.
unsafe impl Send for Mbuf {}

impl Mbuf {
    pub(crate) fn from_raw_nonnull(raw: NonNull<sys::rte_mbuf>) -> Mbuf {
        Mbuf { raw }
    }

    pub(crate) fn into_raw(self) -> *mut sys::rte_mbuf {
        let p = self.raw.as_ptr();
        std::mem::forget(self);
        p
    }

    /// The packet bytes of the first segment.
    #[inline]
    pub fn data(&self) -> &[u8] {
        // SAFETY: we own the mbuf; see `seg_data`.
        unsafe { seg_data(self.raw.as_ptr()) }
    }

    /// The packet bytes of the first segment, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: we own the mbuf exclusively (&mut self); see `seg_data_mut`.
        unsafe { seg_data_mut(self.raw.as_ptr()) }
    }

    /// Packet length (all segments).
    #[inline]
    pub fn pkt_len(&self) -> u32 {
        // SAFETY: reading a field of an mbuf we own.
        unsafe { (*self.raw.as_ptr()).pkt_len }
    }

    /// True when the packet is in a single segment (the only kind the engine parses).
    #[inline]
    pub fn is_contiguous(&self) -> bool {
        // SAFETY: reading a field of an mbuf we own.
        unsafe { (*self.raw.as_ptr()).nb_segs == 1 }
    }

    /// Grow the packet by `n` bytes at the end and return them; `None` if the tailroom is too
    /// small (`rte_pktmbuf_append` semantics, single segment).
    #[inline]
    pub fn append(&mut self, n: usize) -> Option<&mut [u8]> {
        // SAFETY: we own the mbuf exclusively; see `seg_append`.
        unsafe { seg_append(self.raw.as_ptr(), n) }
    }

    /// Set the packet length to `n` bytes (within the first segment's room). Returns false
    /// if `n` does not fit. Bytes newly exposed are whatever the buffer held.
    #[inline]
    pub fn set_len(&mut self, n: usize) -> bool {
        // SAFETY: we own the mbuf exclusively; see `seg_set_len`.
        unsafe { seg_set_len(self.raw.as_ptr(), n) }
    }

    /// Bytes available after `data_off` in the first segment.
    #[inline]
    pub fn capacity(&self) -> usize {
        // SAFETY: reading fields of an mbuf we own.
        unsafe { seg_capacity(self.raw.as_ptr()) }
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: we own the mbuf; this is its single free.
        unsafe { sys::ft_pktmbuf_free(self.raw.as_ptr()) }
    }
}

/// Up to `capacity()` (at most [`BURST_MAX`]) owned mbufs: what one rx_burst returns and one
/// tx_burst sends. The capacity bounds every fill (rx_burst, ring dequeue, bulk alloc).
/// Remaining mbufs are freed (in bulk) on drop.
pub struct MbufBurst {
    pkts: [*mut sys::rte_mbuf; BURST_MAX],
    len: usize,
    /// Fills stop here (1..=BURST_MAX); `engine.burst` sets it for RX.
    cap: usize,
}

// SAFETY: a burst owns its mbufs exactly like `Mbuf` does.
unsafe impl Send for MbufBurst {}

impl Default for MbufBurst {
    fn default() -> Self {
        MbufBurst::new()
    }
}

impl MbufBurst {
    pub const fn new() -> MbufBurst {
        MbufBurst::with_capacity(BURST_MAX)
    }

    /// A burst that holds at most `cap` mbufs (clamped to 1..=BURST_MAX): an RX burst size.
    pub const fn with_capacity(cap: usize) -> MbufBurst {
        let cap = if cap == 0 { 1 } else if cap > BURST_MAX { BURST_MAX } else { cap };
        MbufBurst { pkts: [std::ptr::null_mut(); BURST_MAX], len: 0, cap }
    }

    /// Most mbufs this burst holds.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.cap
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    pub fn is_full(&self) -> bool {
        self.len >= self.cap
    }

    /// Free room in the burst.
    #[inline]
    pub fn room(&self) -> usize {
        self.cap.saturating_sub(self.len)
    }

    /// Bytes of packet `i` (first segment). Panics if `i >= len()` (a programming error, not
    /// packet input).
    #[inline]
    pub fn data(&self, i: usize) -> &[u8] {
        assert!(i < self.len, "burst index {i} out of range {}", self.len);
        // SAFETY: slots below len hold mbufs we own.
        unsafe { seg_data(self.pkts[i]) }
    }

    /// Writable bytes of packet `i`.
    #[inline]
    pub fn data_mut(&mut self, i: usize) -> &mut [u8] {
        assert!(i < self.len, "burst index {i} out of range {}", self.len);
        // SAFETY: slots below len hold mbufs we own; &mut self gives exclusivity.
        unsafe { seg_data_mut(self.pkts[i]) }
    }

    /// Whether packet `i` is a single segment.
    #[inline]
    pub fn is_contiguous(&self, i: usize) -> bool {
        assert!(i < self.len);
        // SAFETY: reading a field of an owned mbuf.
        unsafe { (*self.pkts[i]).nb_segs == 1 }
    }

    /// Set packet `i`'s length (single segment); false if it does not fit.
    #[inline]
    pub fn set_len(&mut self, i: usize, n: usize) -> bool {
        assert!(i < self.len);
        // SAFETY: owned mbuf, exclusive access.
        unsafe { seg_set_len(self.pkts[i], n) }
    }

    /// Prefetch the packet data of slot `i` (no-op if out of range).
    #[inline]
    pub fn prefetch(&self, i: usize) {
        if i < self.len {
            // SAFETY: slots below len hold owned mbufs.
            unsafe { prefetch_data(self.pkts[i]) }
        }
    }

    /// Run `f` on the writable first-segment bytes of every packet in order, prefetching the
    /// next packet's data first (testpmd's loop shape: no per-packet index checks).
    #[inline]
    pub fn for_each_data_mut(&mut self, mut f: impl FnMut(&mut [u8])) {
        let pkts = &self.pkts[..self.len];
        for (i, &m) in pkts.iter().enumerate() {
            if let Some(&next) = pkts.get(i + 1) {
                // SAFETY: slots below len hold owned mbufs.
                unsafe { prefetch_data(next) }
            }
            // SAFETY: owned mbuf; &mut self gives exclusivity; one slice alive at a time.
            f(unsafe { seg_data_mut(m) })
        }
    }

    /// Append an mbuf; gives it back if the burst is full.
    #[inline]
    pub fn push(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        if self.len >= self.cap {
            return Err(m);
        }
        self.pkts[self.len] = m.into_raw();
        self.len += 1;
        Ok(())
    }

    /// Remove and return the last mbuf.
    #[inline]
    pub fn pop(&mut self) -> Option<Mbuf> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        NonNull::new(self.pkts[self.len]).map(Mbuf::from_raw_nonnull)
    }

    /// Remove packet `i`, moving the last one into its slot (order not kept).
    #[inline]
    pub fn swap_remove(&mut self, i: usize) -> Mbuf {
        assert!(i < self.len);
        let p = self.pkts[i];
        self.len -= 1;
        self.pkts[i] = self.pkts[self.len];
        Mbuf::from_raw_nonnull(NonNull::new(p).expect("owned slot is non-null"))
    }

    /// Move every mbuf of `other` (as many as fit) to the end of `self`; returns how many moved.
    pub fn append_from(&mut self, other: &mut MbufBurst) -> usize {
        let n = other.len.min(self.room());
        self.pkts[self.len..self.len + n].copy_from_slice(&other.pkts[..n]);
        self.len += n;
        other.consume_front(n);
        n
    }

    /// Free every mbuf in the burst (one bulk free).
    #[inline]
    pub fn clear(&mut self) {
        if self.len > 0 {
            // SAFETY: the first len slots are owned mbufs, freed once here.
            unsafe { sys::ft_pktmbuf_free_bulk(self.pkts.as_mut_ptr(), self.len as u32) };
            self.len = 0;
        }
    }

    /// Forget the first `n` slots (they were handed to DPDK) and move the rest to the front.
    #[inline]
    pub(crate) fn consume_front(&mut self, n: usize) {
        debug_assert!(n <= self.len);
        let n = n.min(self.len);
        if n < self.len {
            self.pkts.copy_within(n..self.len, 0);
        }
        self.len -= n;
    }

    pub(crate) fn raw_tail(&mut self) -> (*mut *mut sys::rte_mbuf, usize) {
        // SAFETY: offset within the array bounds (len <= BURST_MAX).
        (unsafe { self.pkts.as_mut_ptr().add(self.len) }, self.room())
    }

    pub(crate) fn raw_head(&mut self) -> (*mut *mut sys::rte_mbuf, usize) {
        (self.pkts.as_mut_ptr(), self.len)
    }

    /// Record that DPDK filled `n` more slots after `len` (rx_burst, alloc_bulk, dequeue).
    pub(crate) fn grew(&mut self, n: usize) {
        debug_assert!(self.len + n <= self.cap);
        self.len = (self.len + n).min(self.cap);
    }

    pub(crate) fn alloc_from(&mut self, pool: &Mempool, n: usize) -> bool {
        if n > self.room() {
            return false;
        }
        let (tail, _) = self.raw_tail();
        // SAFETY: `tail` points at `room() >= n` free slots; on success DPDK fills exactly n
        // with mbufs we then own.
        let r = unsafe { sys::ft_pktmbuf_alloc_bulk(pool.as_ptr(), tail, n as u32) };
        if r == 0 {
            self.grew(n);
            true
        } else {
            false
        }
    }
}

impl Drop for MbufBurst {
    fn drop(&mut self) {
        self.clear();
    }
}

// --- single-segment accessors over a raw mbuf pointer -------------------------------------
// Callers guarantee `m` points to a live mbuf they own (exclusively, for the _mut ones).

/// Prefetch an mbuf's packet data into L1 (inline: no call into the C shim).
#[inline(always)]
unsafe fn prefetch_data(m: *const sys::rte_mbuf) {
    // SAFETY: computing an address inside a live mbuf; prefetch never faults.
    unsafe {
        let p = ((*m).buf_addr as *const u8).add((*m).data_off as usize);
        #[cfg(target_arch = "x86_64")]
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p as *const i8);
        #[cfg(not(target_arch = "x86_64"))]
        sys::ft_prefetch0(p as *const std::ffi::c_void);
    }
}

#[inline]
unsafe fn seg_data<'a>(m: *const sys::rte_mbuf) -> &'a [u8] {
    // SAFETY: buf_addr + data_off .. + data_len lies inside the mbuf's data room by DPDK's
    // invariants (data_off + data_len <= buf_len).
    unsafe {
        let p = ((*m).buf_addr as *const u8).add((*m).data_off as usize);
        std::slice::from_raw_parts(p, (*m).data_len as usize)
    }
}

#[inline]
unsafe fn seg_data_mut<'a>(m: *mut sys::rte_mbuf) -> &'a mut [u8] {
    // SAFETY: as seg_data; exclusivity is the caller's guarantee.
    unsafe {
        let p = ((*m).buf_addr as *mut u8).add((*m).data_off as usize);
        std::slice::from_raw_parts_mut(p, (*m).data_len as usize)
    }
}

#[inline]
unsafe fn seg_capacity(m: *const sys::rte_mbuf) -> usize {
    // SAFETY: reading fields of a live mbuf.
    unsafe { ((*m).buf_len as usize).saturating_sub((*m).data_off as usize) }
}

#[inline]
unsafe fn seg_set_len(m: *mut sys::rte_mbuf, n: usize) -> bool {
    // SAFETY: fields of a live, exclusively owned, single-segment mbuf; bounded by capacity.
    unsafe {
        if n > seg_capacity(m) || (*m).nb_segs != 1 {
            return false;
        }
        (*m).data_len = n as u16;
        (*m).pkt_len = n as u32;
        true
    }
}

#[inline]
unsafe fn seg_append<'a>(m: *mut sys::rte_mbuf, n: usize) -> Option<&'a mut [u8]> {
    // SAFETY: as seg_set_len; the returned slice is the newly exposed tail inside the room.
    unsafe {
        let old = (*m).data_len as usize;
        if !seg_set_len(m, old + n) {
            return None;
        }
        let p = ((*m).buf_addr as *mut u8).add((*m).data_off as usize + old);
        Some(std::slice::from_raw_parts_mut(p, n))
    }
}
