//! Owned mbufs and fixed-size bursts of them.
//!
//! Ownership is the safety argument: an [`Mbuf`] or a slot of an [`MbufBurst`] is owned by
//! exactly one Rust value, freed exactly once (on drop, or handed to DPDK by a TX burst, after
//! which we no longer hold it). Only single-segment access is offered: a multi-segment mbuf's
//! first segment is what `data()` shows, and `is_contiguous()` tells the caller to drop it.

use std::ptr::NonNull;

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

    /// Swap the destination and source MAC address (bytes 0..6 and 6..12) of every packet:
    /// testpmd's macswap. Packets whose first segment is shorter than 12 bytes are left alone.
    /// Works four packets at a time, prefetching the next four; on x86_64 with SSSE3 each
    /// swap is one 16-byte load, byte shuffle and store (bytes 12..16 are written back as read).
    #[inline]
    pub fn swap_macs(&mut self) {
        let pkts = &self.pkts[..self.len];
        // SAFETY: slots below len hold mbufs we own; &mut self gives exclusive access to
        // their data.
        unsafe { swap_macs_raw(pkts) }
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

/// [`MbufBurst::swap_macs`] over raw mbuf pointers. Callers guarantee every pointer is a
/// live mbuf they own exclusively.
#[inline]
unsafe fn swap_macs_raw(pkts: &[*mut sys::rte_mbuf]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("ssse3") {
        // SAFETY: SSSE3 is present (checked above); the mbufs are the caller's guarantee.
        unsafe { swap_macs_ssse3(pkts) };
        return;
    }
    // SAFETY: the caller's guarantee, passed on.
    unsafe { swap_macs_portable(pkts) }
}

/// [`swap_macs_raw`] without SIMD: one packet at a time, prefetching the next.
unsafe fn swap_macs_portable(pkts: &[*mut sys::rte_mbuf]) {
    for (i, &m) in pkts.iter().enumerate() {
        if let Some(&next) = pkts.get(i + 1) {
            // SAFETY: a live mbuf (caller's guarantee).
            unsafe { prefetch_data(next) }
        }
        // SAFETY: a live, exclusively owned mbuf (caller's guarantee).
        unsafe { swap_macs_scalar(m) }
    }
}

/// Swap the MACs of one packet byte-wise: the portable path, and SSSE3's path for 12..16-byte
/// first segments (the 16-byte store would pass the end of the data).
#[cold]
#[inline(never)]
unsafe fn swap_macs_scalar(m: *mut sys::rte_mbuf) {
    // SAFETY: a live, exclusively owned mbuf (caller's guarantee); see `seg_data_mut`.
    let d = unsafe { seg_data_mut(m) };
    if let Some(h) = d.first_chunk_mut::<12>() {
        let (dst, src) = h.split_at_mut(6);
        dst.swap_with_slice(src);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3")]
unsafe fn swap_macs_ssse3(pkts: &[*mut sys::rte_mbuf]) {
    use core::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_setr_epi8, _mm_shuffle_epi8, _mm_storeu_si128};

    // Output byte k is input byte mask[k]: the source MAC (6..12), the destination MAC (0..6),
    // then bytes 12..16 (EtherType and beyond) in place.
    let mask = _mm_setr_epi8(6, 7, 8, 9, 10, 11, 0, 1, 2, 3, 4, 5, 12, 13, 14, 15);
    let swap = |m: *mut sys::rte_mbuf| {
        // SAFETY: a live, exclusively owned mbuf (caller's guarantee). With data_len >= 16
        // the 16 bytes at the data start lie inside the packet (DPDK: data_off + data_len
        // <= buf_len); loadu/storeu need no alignment.
        unsafe {
            if (*m).data_len >= 16 {
                let p = ((*m).buf_addr as *mut u8).add((*m).data_off as usize) as *mut __m128i;
                _mm_storeu_si128(p, _mm_shuffle_epi8(_mm_loadu_si128(p), mask));
            } else {
                swap_macs_scalar(m);
            }
        }
    };
    let mut quads = pkts.chunks_exact(4);
    let mut ahead = pkts.get(4..).unwrap_or(&[]).chunks_exact(4);
    for q in quads.by_ref() {
        if let Some(a) = ahead.next() {
            for &m in a {
                // SAFETY: a live mbuf (caller's guarantee).
                unsafe { prefetch_data(m) }
            }
        }
        for &m in q {
            swap(m);
        }
    }
    let rest = quads.remainder();
    for (i, &m) in rest.iter().enumerate() {
        if let Some(&next) = rest.get(i + 1) {
            // SAFETY: a live mbuf (caller's guarantee).
            unsafe { prefetch_data(next) }
        }
        swap(m);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in mbuf over `buf` (no DPDK involved): the data runs from `off` to the end.
    fn fake_mbuf(buf: &mut [u8], off: u16) -> sys::rte_mbuf {
        let buf_len = u16::try_from(buf.len()).expect("test buffer fits a u16");
        sys::rte_mbuf {
            buf_addr: buf.as_mut_ptr().cast(),
            buf_len,
            data_off: off,
            data_len: buf_len.checked_sub(off).expect("offset inside the buffer"),
            nb_segs: 1,
            ..Default::default()
        }
    }

    /// What macswap must do to one frame: MACs swapped from 12 bytes on, else untouched.
    fn expected(frame: &[u8]) -> Vec<u8> {
        let mut e = frame.to_vec();
        if e.len() >= 12 {
            e[..12].rotate_left(6);
        }
        e
    }

    /// Run `swap` over bursts of every length of frames of many lengths and compare.
    fn check_swap(swap: unsafe fn(&[*mut sys::rte_mbuf])) {
        // Each buffer ends where its frame does: a 16-byte access past a short frame leaves the
        // allocation (Miri or ASan would flag it). Frames below 12 bytes must come back as they were.
        let lens: [u16; 12] = [14, 0, 1, 11, 12, 13, 15, 16, 17, 60, 64, 1514];
        // Every burst length covers the four-at-a-time loop, its prefetch-ahead and the rest.
        for n in 0..=BURST_MAX {
            let mut bufs: Vec<Vec<u8>> = (0..n)
                .map(|i| {
                    let len = lens[i % lens.len()] as usize;
                    // An odd data offset: nothing in the swap may assume alignment.
                    (0..len + 3).map(|b| (b * 7 + i) as u8).collect()
                })
                .collect();
            let want: Vec<Vec<u8>> = bufs.iter().map(|b| [&b[..3], &expected(&b[3..])[..]].concat()).collect();
            let mut mbufs: Vec<sys::rte_mbuf> = bufs.iter_mut().map(|b| fake_mbuf(b, 3)).collect();
            let ptrs: Vec<*mut sys::rte_mbuf> = mbufs.iter_mut().map(|m| m as *mut _).collect();
            // SAFETY: each pointer is a live stand-in mbuf over its own buffer, used only here.
            unsafe { swap(&ptrs) };
            drop(mbufs);
            assert_eq!(bufs, want, "burst of {n}");
        }
    }

    #[test]
    fn swap_macs_swaps_the_addresses_and_nothing_else() {
        check_swap(swap_macs_raw);
    }

    #[test]
    fn portable_swap_macs_swaps_the_addresses_and_nothing_else() {
        check_swap(swap_macs_portable);
    }

    #[test]
    fn swap_macs_of_the_example_frame() {
        let mut f: Vec<u8> = (1..=16).collect();
        let mut m = fake_mbuf(&mut f, 0);
        // SAFETY: a live stand-in mbuf over `f`.
        unsafe { swap_macs_raw(&[&mut m as *mut _]) };
        assert_eq!(f, vec![7, 8, 9, 10, 11, 12, 1, 2, 3, 4, 5, 6, 13, 14, 15, 16]);
        let mut short = vec![1u8, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
        let mut m = fake_mbuf(&mut short, 0);
        // SAFETY: as above.
        unsafe { swap_macs_raw(&[&mut m as *mut _]) };
        assert_eq!(short, vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], "frames shorter than two MACs are left alone");
    }
}
