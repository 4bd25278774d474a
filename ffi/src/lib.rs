//! flowtwin-ffi: bindings to the system DPDK (generated at build time by bindgen from the
//! headers pkg-config `libdpdk` points at) and thin safe wrappers. This is the only crate of
//! flowtwin with `unsafe`; every `unsafe` block says why it is sound.
//!
//! Wrappers: [`eal`] (init once per process, lcore launch), [`eal_args`] (EAL's command line,
//! checked before DPDK sees it), typed ids ([`PortId`], [`QueueId`],
//! [`LcoreId`]), [`mempool`], owned [`mbuf`]s and bursts, [`port`] setup/stats, [`ring`]; and
//! [`wait`], the few Linux calls a control thread blocks with (ppoll, eventfd, timer slack).
//! Errors carry DPDK's own message ([`Error`]).

#![deny(unsafe_op_in_unsafe_fn)]

pub mod sys {
    //! Raw bindgen output. Use the safe wrappers instead.
    #![allow(non_upper_case_globals, non_camel_case_types, non_snake_case, dead_code)]
    #![allow(clippy::all, rustdoc::all, missing_docs, improper_ctypes, unsafe_op_in_unsafe_fn)]
    include!(concat!(env!("OUT_DIR"), "/dpdk_bindings.rs"));
}

pub mod eal;
pub mod eal_args;
pub mod error;
pub mod mbuf;
pub mod mempool;
pub mod port;
pub mod ring;
pub mod wait;
pub mod bpf;

pub use eal::{Eal, LaunchHandle};
pub use eal_args::EalArgs;
pub use error::{Error, Result};
pub use mbuf::{Mbuf, MbufBurst, BURST_MAX};
pub use mempool::Mempool;
pub use port::{LinkStatus, Port, PortConfig, PortInfo, PortStats, RssMode, RxQueue, StatsReader, TxQueue};
pub use ring::Ring;
pub use bpf::BpfFilter;

/// A DPDK ethdev port number.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct PortId(pub u16);

/// An RX or TX queue index of a port.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct QueueId(pub u16);

/// An EAL logical core id.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct LcoreId(pub u32);

impl std::fmt::Display for PortId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "port {}", self.0)
    }
}

impl std::fmt::Display for LcoreId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "lcore {}", self.0)
    }
}

/// The TSC: DPDK's cycle counter (`rte_rdtsc`). On x86_64 the instruction itself, inline
/// (it is called around every burst); elsewhere through the shim.
#[inline(always)]
pub fn rdtsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: RDTSC reads the time-stamp counter; it touches no memory.
    unsafe {
        core::arch::x86_64::_rdtsc()
    }
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: reads the CPU's cycle counter through the shim; no memory is touched.
    unsafe {
        sys::ft_rdtsc()
    }
}

/// TSC ticks per second as measured by EAL (valid after EAL init).
pub fn tsc_hz() -> u64 {
    // SAFETY: reads a value EAL computed at init; returns 0-ish garbage before init but is
    // memory-safe either way.
    unsafe { sys::ft_tsc_hz() }
}

/// The DPDK this process runs on, as DPDK names itself (`rte_version()`, e.g. "DPDK 22.11.11"):
/// the shared library loaded now, which may be a newer stable release than the headers the
/// build used. Needs no EAL init.
pub fn dpdk_version() -> String {
    // SAFETY: rte_version returns a pointer to a static NUL-terminated string built into
    // librte_eal; it reads no EAL state, so it is valid before (and without) init.
    let p = unsafe { sys::rte_version() };
    if p.is_null() {
        return "DPDK (unknown version)".into();
    }
    // SAFETY: non-null, NUL-terminated and static (see above); copied before returning.
    unsafe { std::ffi::CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// A spin-loop hint (`rte_pause`), for idle backoff.
#[inline]
pub fn pause() {
    // SAFETY: a CPU pause instruction.
    unsafe { sys::ft_pause() }
}

/// Let the calling thread run on every CPU. EAL pins the thread that called `rte_eal_init`
/// (the main lcore), and threads spawned from it inherit that pinning; a control thread
/// started later (the sync thread) must not share one CPU with a busy worker, or a few ms of
/// starvation look like a dead peer.
pub fn float_current_thread() -> Result<()> {
    // SAFETY: changes only the calling thread's CPU affinity.
    let r = unsafe { sys::ft_float_current_thread() };
    if r != 0 {
        return Err(Error::from_ret("sched_setaffinity(all CPUs)", r));
    }
    Ok(())
}

/// Pin the calling thread to one CPU (e.g. the sync thread to a core of its own).
pub fn pin_current_thread(cpu: usize) -> Result<()> {
    let c = i32::try_from(cpu).map_err(|_| Error::from_ret("sched_setaffinity(one CPU)", -libc::EINVAL))?;
    // SAFETY: changes only the calling thread's CPU affinity; the shim checks the range.
    let r = unsafe { sys::ft_pin_current_thread(c) };
    if r != 0 {
        return Err(Error::from_ret("sched_setaffinity(one CPU)", r));
    }
    Ok(())
}

/// A Linux scheduling policy for [`set_current_thread_scheduler`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchedPolicy {
    /// `SCHED_OTHER`, the default time-sharing one (priority 0).
    Other,
    /// `SCHED_FIFO` at a real-time priority 1..=99.
    Fifo,
    /// `SCHED_RR` at a real-time priority 1..=99.
    RoundRobin,
}

/// Run the calling thread (only it) under `policy` at `priority` (`sched_setscheduler` on
/// the thread: Linux applies it per thread). Real-time policies need `CAP_SYS_NICE` or an
/// `RLIMIT_RTPRIO` at least `priority`; the error then says EPERM.
pub fn set_current_thread_scheduler(policy: SchedPolicy, priority: i32) -> Result<()> {
    let (p, prio) = match policy {
        SchedPolicy::Other => (libc::SCHED_OTHER, 0),
        SchedPolicy::Fifo => (libc::SCHED_FIFO, priority),
        SchedPolicy::RoundRobin => (libc::SCHED_RR, priority),
    };
    let param = libc::sched_param { sched_priority: prio };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param that outlives the call.
    let r = unsafe { libc::sched_setscheduler(0, p, &param) };
    if r != 0 {
        let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EINVAL);
        return Err(Error::from_ret("sched_setscheduler", -e));
    }
    Ok(())
}

/// The calling thread's lcore id, or `None` for a non-EAL thread.
pub fn current_lcore() -> Option<LcoreId> {
    // SAFETY: reads a thread-local per-lcore variable; valid on any thread.
    let id = unsafe { sys::ft_lcore_id() };
    if id == u32::MAX {
        None
    } else {
        Some(LcoreId(id))
    }
}
