//! L2/L3 classification of a worker's stack (DESIGN §2): Ethernet → ARP (answer for our
//! VIPs, learn peers, notice another engine's claim of a VIP) | IPv4 → validate → ICMP echo
//! (answer) | TCP to a VIP (handed to the flow code in `stack`) | anything else (counted
//! drop). Also the gratuitous ARP a new active announces its VIPs with.

use std::net::Ipv4Addr;

use super::{FrameSink, GroupId, Stack};
use crate::counters::{Drop, Event};
use crate::time::Instant;
use crate::neighbor::{self, Due, Evidence, Heard, Learned, Resolve};
use crate::wire::arp::{self, AnnounceTag, ArpOp, ArpRepr};
use crate::wire::ethernet::{self, ethertype, EthernetFrame, MacAddr};
use crate::wire::icmp::echo_reply_in_place;
use crate::wire::ipv4::{protocol, Ipv4Packet};
use crate::wire::WireError;

/// Mappings heard and not yet taken that a stack keeps (more than an RX burst's frames: the
/// dataplane takes them after every burst).
pub(super) const HEARD_MAX: usize = 256;

impl Stack {
    /// Gratuitous ARP for every VIP of the groups this stack owns, from its MAC, so the switch relearns where the VIP lives
    /// (VRRP does the same, RFC 5798 §6.4.1). With an identity ([`Stack::set_identity`]) each
    /// carries an [`AnnounceTag`]: an old active that still lives (the sync link was cut)
    /// learns from it that it was taken over.
    pub fn announce<F: FrameSink + ?Sized>(&mut self, tx: &mut F) {
        let (cfg, owned, tag) = (self.cfg.clone(), self.owned, self.identity);
        for v in cfg.vips.iter().filter(|v| owned.contains(v.group)) {
            let sent = tx.emit(&mut |buf: &mut [u8]| match tag {
                Some(t) => t.emit_gratuitous(v.mac, v.addr, buf).unwrap_or(0),
                None => ArpRepr::gratuitous(v.mac, v.addr).emit_frame(buf).unwrap_or(0),
            });
            self.count_tx(sent, Event::GratuitousArps);
        }
    }

    /// This engine's node id and current epoch, for its announcements.
    pub fn set_identity(&mut self, node_id: u32, epoch: u64) {
        self.identity = Some(AnnounceTag { node_id, epoch });
    }

    /// The newest claim of one of our VIPs by another engine since the last call.
    pub fn take_vip_claim(&mut self) -> Option<AnnounceTag> {
        self.vip_claim.take()
    }

    /// The MAC we learned for `ip`, if any (in any state that has one: usable now, or to be
    /// confirmed on use).
    pub fn arp_lookup(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        self.arp.get(ip).filter(|&(st, _)| !matches!(st, neighbor::State::Incomplete | neighbor::State::Failed)).map(|(_, m)| m)
    }

    /// The neighbour table's own counters (requests, hits, misses, drops by reason).
    pub fn neighbor_counters(&self) -> &neighbor::NeighborCounters {
        self.arp.counters()
    }

    /// Share what ARP teaches this worker with the other workers of the engine (`on`), or not
    /// (the default: one worker). ARP reaches one worker only (the software distribution and
    /// RSS leave non-IP frames on worker 0), but every worker resolves the next hops of the
    /// connections it opens: worker k's request is answered to worker 0. With sharing on, each
    /// mapping heard waits for [`Stack::take_heard_neighbor`] (the caller hands it to the
    /// others' [`Stack::learn_neighbor`]): a reply (whatever this worker's table made of it:
    /// another worker may be waiting for it) and anything that created or changed an entry.
    pub fn set_neighbor_sharing(&mut self, on: bool) {
        self.heard = on.then(|| std::collections::VecDeque::with_capacity(HEARD_MAX));
    }

    /// The oldest mapping heard and not taken yet (sharing on).
    pub fn take_heard_neighbor(&mut self) -> Option<Heard> {
        self.heard.as_mut()?.pop_front()
    }

    /// A mapping another worker of this engine heard (its [`Stack::take_heard_neighbor`]):
    /// merged into this worker's neighbour table as if heard here, so a next hop this worker
    /// asked for resolves, and the SYNs that waited for it leave (into `tx`, sealed by the
    /// caller as the output of a received frame is). Not shared again.
    pub fn learn_neighbor<F: FrameSink + ?Sized>(&mut self, now: Instant, heard: Heard, tx: &mut F) -> Learned {
        if self.cfg.vip(heard.ip).is_some() {
            return Learned::Ignored; // never a neighbour (`on_arp` does not pass these on)
        }
        let learned = self.arp.learn(now, heard.ip, heard.mac, heard.evidence);
        match learned {
            Learned::Created | Learned::Updated => self.counters.event(Event::NeighborsFromWorkers),
            Learned::Resolved { mac, .. } => {
                self.counters.event(Event::NeighborsFromWorkers);
                self.counters.event(Event::NeighborsResolved);
                self.next_hop_resolved(now, heard.ip, mac, tx);
            }
            Learned::Unchanged | Learned::Ignored => {}
        }
        learned
    }

    /// Next-hop resolution for a frame this engine originates toward `ip` (a connection it
    /// opens) from the VIP `from`: the MAC to send to, or what to do with the frame meanwhile
    /// ([`Resolve`]). A first miss sends a broadcast ARP request from `from`'s MAC at once;
    /// retransmits, probes of stale entries and failures come from [`Stack::poll`].
    pub fn resolve<F: FrameSink + ?Sized>(&mut self, now: Instant, from: Ipv4Addr, ip: Ipv4Addr, tx: &mut F) -> Resolve {
        let r = self.arp.lookup(now, ip);
        if r == Resolve::SendRequest {
            self.send_arp_request(from, ip, MacAddr::BROADCAST, tx);
        }
        r
    }

    /// The neighbour table's timer work: request retransmits and unicast probes (from the
    /// first VIP: the table does not remember who asked), failures counted.
    pub(super) fn poll_neighbors<F: FrameSink + ?Sized>(&mut self, now: Instant, tx: &mut F) {
        if self.arp.next_deadline().is_none_or(|d| d > now) {
            return;
        }
        while let Some(due) = self.arp.poll(now) {
            match due {
                Due::Request { ip, dst } => self.send_arp_request(Ipv4Addr::UNSPECIFIED, ip, dst, tx),
                Due::Failed { ip, .. } => {
                    self.counters.event(Event::NeighborFailures);
                    self.next_hop_failed(ip);
                }
            }
        }
    }

    /// An ARP request for `ip` to `dst`, from the VIP `from` (its address and MAC; the first
    /// VIP's if `from` is none of ours, so that sender address and MAC always belong together).
    fn send_arp_request<F: FrameSink + ?Sized>(&mut self, from: Ipv4Addr, ip: Ipv4Addr, dst: MacAddr, tx: &mut F) {
        let Some((src_ip, src_mac)) = self.vip_mac(from).map(|m| (from, m)).or_else(|| self.cfg.vips.first().map(|v| (v.addr, v.mac))) else {
            return;
        };
        let sent = tx.emit(&mut |buf: &mut [u8]| neighbor::emit_request(buf, src_mac, src_ip, ip, dst).unwrap_or(0));
        self.count_tx(sent, Event::ArpRequestsSent);
    }

    /// The group a frame this stack built belongs to: that of its IPv4 source (one of our
    /// VIPs) or of its ARP sender; None for anything else.
    pub fn group_of_frame(&self, frame: &[u8]) -> Option<GroupId> {
        let eth = EthernetFrame::new_checked(frame).ok()?;
        let src = match eth.ethertype() {
            ethertype::IPV4 => Ipv4Packet::new_checked(eth.payload()).ok()?.src(),
            ethertype::ARP => ArpRepr::parse(eth.payload()).ok()?.sender_ip,
            _ => return None,
        };
        self.cfg.group_of(src)
    }

    pub(super) fn vip_mac(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        self.cfg.vip(ip).map(|v| v.mac)
    }

    fn is_our_mac(&self, mac: MacAddr) -> bool {
        self.cfg.vips.iter().any(|v| v.mac == mac)
    }

    /// Process one received frame.
    pub fn process<F: FrameSink + ?Sized>(&mut self, now: Instant, frame: &[u8], tx: &mut F) {
        self.now = self.now.max(now);
        self.counters.event(Event::RxFrames);
        if self.owned.is_empty() {
            // A standby of every group answers nothing (and learns nothing: the active does).
            return self.counters.drop(Drop::Standby);
        }
        let eth = match EthernetFrame::new_checked(frame) {
            Ok(e) => e,
            Err(_) => return self.counters.drop(Drop::RuntFrame),
        };
        let dst = eth.dst();
        if eth.src().is_multicast() {
            // IEEE 802: a group address is never a source; learning it as a flow's peer MAC
            // would flood every later reply.
            return self.counters.drop(Drop::BadSourceMac);
        }
        if !dst.is_broadcast() && !self.is_our_mac(dst) {
            // Multicast we do not join, or unicast for another host (promiscuous ports on a
            // shared segment see those).
            return self.counters.drop(Drop::NotOurMac);
        }
        match eth.ethertype() {
            ethertype::ARP => self.on_arp(now, eth.src(), dst, eth.payload(), tx),
            ethertype::IPV4 => self.on_ipv4(now, frame, eth.src(), tx),
            _ => self.counters.drop(Drop::OtherEthertype),
        }
    }

    fn on_arp<F: FrameSink + ?Sized>(&mut self, now: Instant, src: MacAddr, dst: MacAddr, payload: &[u8], tx: &mut F) {
        let arp = match ArpRepr::parse(payload) {
            Ok(a) => a,
            Err(_) => return self.counters.drop(Drop::BadArp),
        };
        if arp.sender_mac != src || arp.sender_mac.is_multicast() {
            // RFC 826 leaves this open; a mismatch is spoofing or a proxy. Do not learn it.
            return self.counters.drop(Drop::BadArp);
        }
        if let Some(g) = self.cfg.group_of(arp.sender_ip) {
            // Someone announces one of our VIPs. Another engine's tagged announcement says it
            // took the VIP over; anything else (a misconfigured host) is not ours to act on,
            // and neither is the announcement of a group we do not own (its owner speaks).
            let owned = self.owned.contains(g);
            if let Some(tag) = payload.get(arp::PACKET_LEN..).and_then(AnnounceTag::read).filter(|_| owned) {
                if self.identity.is_some_and(|me| me.node_id != tag.node_id)
                    && self.vip_claim.is_none_or(|c| tag.epoch > c.epoch)
                {
                    self.vip_claim = Some(tag);
                    self.counters.event(Event::VipClaimsSeen);
                }
            }
            // Not a question for us, and not a neighbour to learn.
            return self.counters.drop(Drop::ArpFromOurVip);
        }
        if !arp.sender_ip.is_unspecified() {
            let evidence = Evidence::of(&arp, dst);
            let learned = self.arp.learn(now, arp.sender_ip, arp.sender_mac, evidence);
            match learned {
                Learned::Created | Learned::Updated => self.counters.event(Event::ArpLearned),
                Learned::Resolved { mac, .. } => {
                    self.counters.event(Event::ArpLearned);
                    self.counters.event(Event::NeighborsResolved);
                    self.next_hop_resolved(now, arp.sender_ip, mac, tx);
                }
                Learned::Unchanged | Learned::Ignored => {}
            }
            let news = !matches!(learned, Learned::Unchanged | Learned::Ignored);
            if let Some(q) = self.heard.as_mut().filter(|_| news || arp.op == ArpOp::Reply) {
                if q.len() == HEARD_MAX {
                    q.pop_front();
                    self.counters.event(Event::NeighborShareDropped);
                }
                q.push_back(Heard { ip: arp.sender_ip, mac: arp.sender_mac, evidence });
            }
        }
        match (arp.op, self.cfg.vip(arp.target_ip)) {
            (ArpOp::Request, Some(v)) if !self.owned.contains(v.group) => self.counters.drop(Drop::Standby),
            (ArpOp::Request, Some(v)) => {
                let mac = v.mac;
                let reply = arp.reply(mac);
                let sent = tx.emit(&mut |buf: &mut [u8]| reply.emit_frame(buf).unwrap_or(0));
                self.count_tx(sent, Event::ArpRequestsAnswered);
            }
            (ArpOp::Reply, _) => {}
            _ => self.counters.drop(Drop::ArpNotForUs),
        }
    }

    pub(super) fn count_tx(&mut self, sent: bool, what: Event) {
        if sent {
            self.counters.event(what);
            self.counters.event(Event::TxFrames);
        } else {
            self.counters.drop(Drop::TxNoMbuf);
        }
    }

    fn on_ipv4<F: FrameSink + ?Sized>(&mut self, now: Instant, frame: &[u8], src_mac: MacAddr, tx: &mut F) {
        let l3 = &frame[ethernet::HEADER_LEN..];
        let ip = match Ipv4Packet::new_checked(l3) {
            Ok(p) => p,
            Err(WireError::BadChecksum) => return self.counters.drop(Drop::BadIpv4Checksum),
            Err(_) => return self.counters.drop(Drop::BadIpv4Header),
        };
        let (src, dst) = (ip.src(), ip.dst());
        let Some(vip) = self.cfg.vip(dst) else {
            return self.counters.drop(Drop::NotOurIp);
        };
        if !self.owned.contains(vip.group) {
            // Its group's owner (our peer) answers it; we stand by for it.
            return self.counters.drop(Drop::Standby);
        }
        let vip_mac = vip.mac;
        if ip.is_fragment() {
            return self.counters.drop(Drop::Ipv4Fragment);
        }
        if ip.has_options() {
            return self.counters.drop(Drop::Ipv4Options);
        }
        if ip.ttl() == 0 {
            return self.counters.drop(Drop::BadTtl);
        }
        // A source that is one of our own addresses is a LAND attack or a loop: answering it
        // would send frames to ourselves through the client's MAC.
        if src.is_unspecified() || src.is_broadcast() || src.is_multicast() || src.is_loopback() || self.vip_mac(src).is_some() {
            return self.counters.drop(Drop::BadSourceAddress);
        }
        match ip.protocol() {
            protocol::ICMP => {
                let len = ethernet::HEADER_LEN + ip.total_len();
                let mut built = 0;
                let sent = tx.emit(&mut |buf: &mut [u8]| {
                    let Some(out) = buf.get_mut(..len) else { return 0 };
                    out.copy_from_slice(&frame[..len]);
                    built = echo_reply_in_place(out).unwrap_or(0);
                    built
                });
                // echo_reply_in_place refuses anything but a valid echo request (checksum,
                // code 0); then the builder returned 0 and nothing left.
                if built > 0 {
                    self.count_tx(sent, Event::IcmpEchoAnswered);
                } else {
                    self.counters.drop(Drop::IcmpIgnored);
                }
            }
            protocol::TCP => self.on_tcp(now, src, dst, src_mac, vip_mac, ip.payload(), tx),
            _ => self.counters.drop(Drop::OtherProtocol),
        }
    }
}
