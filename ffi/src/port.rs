//! Ethernet ports: configuration (queues, symmetric RSS), start/stop, link, statistics, and
//! per-queue handles for the fast path.
//!
//! Each RX queue and each TX queue is handed out once, as an [`RxQueue`] or a [`TxQueue`]:
//! DPDK queues are not thread-safe, so single ownership of the handle is what makes
//! `rx_burst`/`tx_burst` safe. RX and TX queues are independent, so one lcore may own RX
//! queue q of port 0 and TX queue q of port 1 (testpmd's stream model).

use std::ffi::{CStr, CString};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::mbuf::MbufBurst;
use crate::mempool::Mempool;
use crate::{sys, Eal, PortId, QueueId};

/// How RX traffic is spread over queues.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RssMode {
    /// Symmetric Toeplitz RSS on IP/TCP/UDP when the driver supports it and there is more
    /// than one RX queue: both directions of a flow land on the same queue.
    Symmetric,
    /// No RSS (single queue, or the caller spreads flows itself).
    Off,
}

/// Port configuration.
#[derive(Clone, Debug)]
pub struct PortConfig {
    pub rx_queues: u16,
    pub tx_queues: u16,
    pub rx_desc: u16,
    pub tx_desc: u16,
    pub rss: RssMode,
    pub promiscuous: bool,
}

impl Default for PortConfig {
    fn default() -> Self {
        PortConfig { rx_queues: 1, tx_queues: 1, rx_desc: 1024, tx_desc: 1024, rss: RssMode::Symmetric, promiscuous: true }
    }
}

/// What the driver reported and what we configured.
#[derive(Clone, Debug)]
pub struct PortInfo {
    pub id: PortId,
    pub name: String,
    pub driver: String,
    pub mac: [u8; 6],
    pub max_rx_queues: u16,
    pub max_tx_queues: u16,
    /// True when RSS was enabled (symmetric key) on this port.
    pub rss_active: bool,
    /// Entries of the device's RSS redirection table (0: none reported).
    pub reta_size: u16,
    pub socket: i32,
}

/// Link state.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkStatus {
    pub up: bool,
    pub speed_mbps: u32,
    pub full_duplex: bool,
}

/// Basic ethdev counters (`rte_eth_stats`), per port and per queue.
#[derive(Clone, Debug, Default)]
pub struct PortStats {
    pub ipackets: u64,
    pub opackets: u64,
    pub ibytes: u64,
    pub obytes: u64,
    /// RX packets dropped by the hardware/driver because no descriptor was free.
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    /// RX mbuf allocation failures.
    pub rx_nombuf: u64,
    pub q_ipackets: Vec<u64>,
    pub q_opackets: Vec<u64>,
}

struct PortInner {
    id: PortId,
    info: PortInfo,
    started: Mutex<bool>,
}

impl Drop for PortInner {
    fn drop(&mut self) {
        // After rte_eal_cleanup (Eal dropped first) the port no longer exists.
        // SAFETY: a plain validity query on the port id.
        if unsafe { sys::rte_eth_dev_is_valid_port(self.id.0) } == 0 {
            return;
        }
        let mut started = self.started.lock().unwrap_or_else(|e| e.into_inner());
        if *started {
            // SAFETY: no queue handle is alive (they hold Arc<PortInner>), so no lcore polls
            // this port any more.
            unsafe { sys::rte_eth_dev_stop(self.id.0) };
            *started = false;
        }
        // SAFETY: as above; closing releases the driver's queues.
        unsafe { sys::rte_eth_dev_close(self.id.0) };
    }
}

/// A configured and started port.
pub struct Port {
    inner: Arc<PortInner>,
    rxq: Vec<Option<RxQueue>>,
    txq: Vec<Option<TxQueue>>,
}

/// Exclusive handle on one RX queue of a port.
pub struct RxQueue {
    port: Arc<PortInner>,
    queue: QueueId,
}

/// Exclusive handle on one TX queue of a port.
pub struct TxQueue {
    port: Arc<PortInner>,
    queue: QueueId,
}

/// 40-byte symmetric Toeplitz key: the repeating 0x6d5a pattern makes the hash of
/// (src, dst) equal to that of (dst, src) (Woo & Park, "Scalable TCP Session Monitoring with
/// Symmetric Receive-side Scaling").
const SYMMETRIC_RSS_KEY: [u8; 52] = {
    let mut k = [0u8; 52];
    let mut i = 0;
    while i < 52 {
        k[i] = if i % 2 == 0 { 0x6d } else { 0x5a };
        i += 1;
    }
    k
};

/// Ports DPDK probed (from `-a`/`--vdev`), in id order.
pub fn available_ports(_eal: &Eal) -> Vec<PortId> {
    let mut v = Vec::new();
    let mut p: u64 = 0;
    loop {
        // SAFETY: iterates ethdev's port array; any start value is valid.
        let next = unsafe { sys::rte_eth_find_next_owned_by(p as u16, sys::RTE_ETH_DEV_NO_OWNER as u64) };
        if next >= sys::RTE_MAX_ETHPORTS as u64 || p >= sys::RTE_MAX_ETHPORTS as u64 {
            break;
        }
        v.push(PortId(next as u16));
        p = next + 1;
    }
    v
}

/// Look a port up by its device name (e.g. `net_af_packet0`, `0000:01:00.0`).
pub fn port_by_name(_eal: &Eal, name: &str) -> Result<PortId> {
    let c = CString::new(name).map_err(|_| Error::invalid("rte_eth_dev_get_port_by_name", "name contains NUL"))?;
    let mut id: u16 = 0;
    // SAFETY: valid C string and out-pointer.
    let r = unsafe { sys::rte_eth_dev_get_port_by_name(c.as_ptr(), &mut id) };
    if r != 0 {
        return Err(Error::from_ret(format!("looking up port {name:?}"), r)
            .with_hint("the device must be given to EAL (--vdev / -a); see `flowtwin run --help`"));
    }
    Ok(PortId(id))
}

impl Port {
    /// Configure `id` with `conf`, set up its queues with mbufs from `pool`, and start it.
    pub fn start(eal: &Eal, id: PortId, conf: &PortConfig, pool: &Mempool) -> Result<Port> {
        let _ = eal;
        let mut dev_info: sys::rte_eth_dev_info = Default::default();
        // SAFETY: out-pointer to a properly sized struct.
        let r = unsafe { sys::rte_eth_dev_info_get(id.0, &mut dev_info) };
        if r != 0 {
            return Err(Error::from_ret(format!("rte_eth_dev_info_get({id})"), r));
        }
        let driver = cstr_or(dev_info.driver_name, "?");
        let name = port_name(id);
        if conf.rx_queues == 0 || conf.tx_queues == 0 {
            return Err(Error::invalid(format!("configuring {id} ({name})"), "rx_queues and tx_queues must be >= 1"));
        }
        if conf.rx_queues > dev_info.max_rx_queues || conf.tx_queues > dev_info.max_tx_queues {
            return Err(Error::invalid(
                format!("configuring {id} ({name}, driver {driver})"),
                format!(
                    "asked for {} RX / {} TX queues but the device supports at most {} / {}",
                    conf.rx_queues, conf.tx_queues, dev_info.max_rx_queues, dev_info.max_tx_queues
                ),
            )
            .with_hint("for af_packet give qpairs=N in the --vdev args; otherwise use fewer workers"));
        }

        let mut eth_conf: sys::rte_eth_conf = Default::default();
        let rss_hf = dev_info.flow_type_rss_offloads
            // SAFETY: reading constants exported by the shim.
            & unsafe { sys::FT_ETH_RSS_IP | sys::FT_ETH_RSS_TCP | sys::FT_ETH_RSS_UDP };
        let rss_active = conf.rss == RssMode::Symmetric && conf.rx_queues > 1 && rss_hf != 0;
        let mut key = SYMMETRIC_RSS_KEY;
        if rss_active {
            eth_conf.rxmode.mq_mode = sys::RTE_ETH_MQ_RX_RSS;
            let klen = if dev_info.hash_key_size == 0 { 40 } else { dev_info.hash_key_size.min(52) };
            eth_conf.rx_adv_conf.rss_conf.rss_key = key.as_mut_ptr();
            eth_conf.rx_adv_conf.rss_conf.rss_key_len = klen;
            eth_conf.rx_adv_conf.rss_conf.rss_hf = rss_hf;
        }
        // SAFETY: reading a shim constant.
        let fast_free = unsafe { sys::FT_ETH_TX_OFFLOAD_MBUF_FAST_FREE };
        if dev_info.tx_offload_capa & fast_free != 0 {
            eth_conf.txmode.offloads |= fast_free;
        }
        // SAFETY: eth_conf (and the key it points to) live across the call; DPDK copies them.
        let r = unsafe { sys::rte_eth_dev_configure(id.0, conf.rx_queues, conf.tx_queues, &eth_conf) };
        if r != 0 {
            return Err(Error::from_ret(format!("rte_eth_dev_configure({id} {name}, driver {driver})"), r));
        }
        let (mut nb_rx, mut nb_tx) = (conf.rx_desc, conf.tx_desc);
        // SAFETY: valid out-pointers.
        let r = unsafe { sys::rte_eth_dev_adjust_nb_rx_tx_desc(id.0, &mut nb_rx, &mut nb_tx) };
        if r != 0 {
            return Err(Error::from_ret(format!("rte_eth_dev_adjust_nb_rx_tx_desc({id})"), r));
        }
        // SAFETY: plain query.
        let socket = unsafe { sys::rte_eth_dev_socket_id(id.0) };
        let sock = if socket < 0 { 0 } else { socket as u32 };
        for q in 0..conf.rx_queues {
            // SAFETY: the pool outlives the port's use of it (Mempool::drop refuses to free a
            // pool with mbufs in use); NULL rxconf selects the driver defaults.
            let r = unsafe { sys::rte_eth_rx_queue_setup(id.0, q, nb_rx, sock, std::ptr::null(), pool.as_ptr()) };
            if r != 0 {
                return Err(Error::from_ret(format!("rte_eth_rx_queue_setup({id}, queue {q}, {nb_rx} descriptors)"), r)
                    .with_hint("the mempool may be too small for the RX rings: raise mbufs in the config"));
            }
        }
        let mut txconf = dev_info.default_txconf;
        txconf.offloads = eth_conf.txmode.offloads;
        for q in 0..conf.tx_queues {
            // SAFETY: txconf lives across the call.
            let r = unsafe { sys::rte_eth_tx_queue_setup(id.0, q, nb_tx, sock, &txconf) };
            if r != 0 {
                return Err(Error::from_ret(format!("rte_eth_tx_queue_setup({id}, queue {q})"), r));
            }
        }
        // SAFETY: the port is configured.
        let r = unsafe { sys::rte_eth_dev_start(id.0) };
        if r != 0 {
            return Err(Error::from_ret(format!("rte_eth_dev_start({id} {name})"), r));
        }
        if conf.promiscuous {
            // SAFETY: started port. Not every driver supports it (-ENOTSUP): not fatal.
            unsafe { sys::rte_eth_promiscuous_enable(id.0) };
        }
        let mut mac: sys::rte_ether_addr = Default::default();
        // SAFETY: valid out-pointer.
        unsafe { sys::rte_eth_macaddr_get(id.0, &mut mac) };
        let info = PortInfo {
            id,
            name,
            driver,
            mac: mac.addr_bytes,
            max_rx_queues: dev_info.max_rx_queues,
            max_tx_queues: dev_info.max_tx_queues,
            rss_active,
            reta_size: dev_info.reta_size,
            socket,
        };
        let inner = Arc::new(PortInner { id, info, started: Mutex::new(true) });
        let rxq = (0..conf.rx_queues).map(|q| Some(RxQueue { port: inner.clone(), queue: QueueId(q) })).collect();
        let txq = (0..conf.tx_queues).map(|q| Some(TxQueue { port: inner.clone(), queue: QueueId(q) })).collect();
        Ok(Port { inner, rxq, txq })
    }

    pub fn id(&self) -> PortId {
        self.inner.id
    }

    pub fn info(&self) -> &PortInfo {
        &self.inner.info
    }

    /// Take the handle of RX queue `q` (once). `None` if taken or out of range.
    pub fn take_rx(&mut self, q: u16) -> Option<RxQueue> {
        self.rxq.get_mut(q as usize).and_then(Option::take)
    }

    /// Take the handle of TX queue `q` (once). `None` if taken or out of range.
    pub fn take_tx(&mut self, q: u16) -> Option<TxQueue> {
        self.txq.get_mut(q as usize).and_then(Option::take)
    }

    /// Link state without waiting.
    pub fn link(&self) -> LinkStatus {
        link_of(self.inner.id)
    }

    /// Counters.
    pub fn stats(&self) -> Result<PortStats> {
        stats_of(self.inner.id, self.rxq.len().max(self.txq.len()))
    }

    /// A cheap, cloneable handle for reading this port's counters from a control thread.
    pub fn stats_reader(&self) -> StatsReader {
        StatsReader { port: self.inner.clone(), nq: self.rxq.len().max(self.txq.len()) }
    }
}

/// Reads a port's counters from any thread (ethdev stats calls are safe concurrently with
/// the data path).
#[derive(Clone)]
pub struct StatsReader {
    port: Arc<PortInner>,
    nq: usize,
}

impl StatsReader {
    pub fn id(&self) -> PortId {
        self.port.id
    }
    pub fn info(&self) -> &PortInfo {
        &self.port.info
    }
    pub fn stats(&self) -> Result<PortStats> {
        stats_of(self.port.id, self.nq)
    }
    pub fn link(&self) -> LinkStatus {
        link_of(self.port.id)
    }
}

fn link_of(id: PortId) -> LinkStatus {
    let mut l: sys::rte_eth_link = Default::default();
    // SAFETY: valid out-pointer.
    let r = unsafe { sys::rte_eth_link_get_nowait(id.0, &mut l) };
    if r != 0 {
        return LinkStatus::default();
    }
    LinkStatus { up: l.link_status() != 0, speed_mbps: l.link_speed, full_duplex: l.link_duplex() != 0 }
}

fn stats_of(id: PortId, nq: usize) -> Result<PortStats> {
    let mut s: sys::rte_eth_stats = Default::default();
    // SAFETY: valid out-pointer.
    let r = unsafe { sys::rte_eth_stats_get(id.0, &mut s) };
    if r != 0 {
        return Err(Error::from_ret(format!("rte_eth_stats_get({id})"), r));
    }
    let nq = nq.min(s.q_ipackets.len());
    Ok(PortStats {
        ipackets: s.ipackets,
        opackets: s.opackets,
        ibytes: s.ibytes,
        obytes: s.obytes,
        imissed: s.imissed,
        ierrors: s.ierrors,
        oerrors: s.oerrors,
        rx_nombuf: s.rx_nombuf,
        q_ipackets: s.q_ipackets[..nq].to_vec(),
        q_opackets: s.q_opackets[..nq].to_vec(),
    })
}

fn port_name(id: PortId) -> String {
    let mut buf = [0 as std::ffi::c_char; sys::RTE_ETH_NAME_MAX_LEN as usize];
    // SAFETY: buffer of the documented maximum size.
    let r = unsafe { sys::rte_eth_dev_get_name_by_port(id.0, buf.as_mut_ptr()) };
    if r != 0 {
        return format!("port{}", id.0);
    }
    // SAFETY: DPDK NUL-terminates within RTE_ETH_NAME_MAX_LEN.
    unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
}

fn cstr_or(p: *const std::ffi::c_char, dflt: &str) -> String {
    if p.is_null() {
        return dflt.to_owned();
    }
    // SAFETY: DPDK driver names are static NUL-terminated strings.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

impl RxQueue {
    pub fn port(&self) -> PortId {
        self.port.id
    }

    pub fn queue(&self) -> QueueId {
        self.queue
    }

    /// Receive up to `burst.room()` packets, appended to `burst`. Returns how many arrived.
    #[inline]
    pub fn rx_burst(&mut self, burst: &mut MbufBurst) -> usize {
        let (tail, room) = burst.raw_tail();
        if room == 0 {
            return 0;
        }
        // SAFETY: we exclusively own this RX queue (&mut self, handle handed out once); `tail`
        // has `room` free slots which DPDK fills with mbufs we then own.
        let n = unsafe { sys::ft_rx_burst(self.port.id.0, self.queue.0, tail, room as u16) } as usize;
        burst.grew(n);
        n
    }
}

impl TxQueue {
    pub fn port(&self) -> PortId {
        self.port.id
    }

    pub fn queue(&self) -> QueueId {
        self.queue
    }

    /// Transmit the burst from the front. Sent mbufs leave the burst (DPDK owns them now);
    /// unsent ones stay, in order, for the caller's stated policy (retry or drop).
    #[inline]
    pub fn tx_burst(&mut self, burst: &mut MbufBurst) -> usize {
        let (head, len) = burst.raw_head();
        if len == 0 {
            return 0;
        }
        // SAFETY: exclusive TX queue; the first `len` slots are owned mbufs; DPDK takes
        // ownership of the first `n` it reports as sent.
        let n = unsafe { sys::ft_tx_burst(self.port.id.0, self.queue.0, head, len as u16) } as usize;
        let n = n.min(len);
        burst.consume_front(n);
        n
    }
}

/// The most RX and TX queues port `id` supports (`rte_eth_dev_info_get`), asked before
/// [`Port::start`] so a caller can pick a queue layout the device can give.
pub fn queue_limits(_eal: &Eal, id: PortId) -> Result<(u16, u16)> {
    let mut dev_info: sys::rte_eth_dev_info = Default::default();
    // SAFETY: out-pointer to a properly sized struct.
    let r = unsafe { sys::rte_eth_dev_info_get(id.0, &mut dev_info) };
    if r != 0 {
        return Err(Error::from_ret(format!("rte_eth_dev_info_get({id})"), r));
    }
    Ok((dev_info.max_rx_queues, dev_info.max_tx_queues))
}
