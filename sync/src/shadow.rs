//! The standby's replica table of one worker: flows indexed the way the active indexes them.
//!
//! A delta names its flow by `(slot, generation)`: the slot is the flow's index in the
//! active's flow table, the generation tells reuses of that slot apart. The table is a vector
//! indexed by slot, so applying a delta is an index and a generation compare, not a hash
//! lookup; the flows are boxed so neither growing the vector nor inserting moves a replica
//! (a `ShadowFlow` carries its service state inline, ~2.4 KB for HTTP). With a `HashMap`
//! keyed by `(slot, generation)` hashing and moving entries were a quarter of the standby's
//! apply time at 25 000 new connections/s.

use flowtwin_engine::replica::ShadowFlow;

/// Largest slot index any engine config allows (`engine.flow_capacity` ≤ 2^26): a delta
/// naming a higher slot is corrupt and is refused instead of growing the table.
pub const MAX_SLOTS: u32 = 1 << 26;

/// `(slot, generation)` of a flow on the active.
pub type SlotKey = (u32, u32);

/// A slot index beyond [`MAX_SLOTS`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SlotOutOfRange(pub u32);

impl std::fmt::Display for SlotOutOfRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "flow slot {} beyond the largest flow table ({MAX_SLOTS} flows)", self.0)
    }
}

/// One worker's replicas.
#[derive(Default)]
pub struct ShadowSlots {
    slots: Vec<Option<(u32, Box<ShadowFlow>)>>,
    live: usize,
}

impl ShadowSlots {
    /// Replicas held.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    pub fn get_mut(&mut self, (slot, gen): SlotKey) -> Option<&mut ShadowFlow> {
        match self.slots.get_mut(slot as usize) {
            Some(Some((g, f))) if *g == gen => Some(f),
            _ => None,
        }
    }

    pub fn contains(&self, (slot, gen): SlotKey) -> bool {
        matches!(self.slots.get(slot as usize), Some(Some((g, _))) if *g == gen)
    }

    /// Store a new flow. An older generation still in the slot is replaced and returned:
    /// the active reused the slot, so that flow is gone there (its close was lost or
    /// coalesced away).
    pub fn insert(&mut self, (slot, gen): SlotKey, f: ShadowFlow) -> Result<Option<Box<ShadowFlow>>, SlotOutOfRange> {
        if slot >= MAX_SLOTS {
            return Err(SlotOutOfRange(slot));
        }
        let i = slot as usize;
        if i >= self.slots.len() {
            // Grow geometrically (amortised), never beyond what the slot needs twice over.
            let want = (i + 1).max(self.slots.len() * 2).min(MAX_SLOTS as usize);
            self.slots.resize_with(want, || None);
        }
        let old = self.slots[i].replace((gen, Box::new(f)));
        if old.is_none() {
            self.live += 1;
        }
        Ok(old.and_then(|(g, f)| (g != gen).then_some(f)))
    }

    /// Remove the flow if this generation is in its slot.
    pub fn remove(&mut self, key: SlotKey) -> Option<Box<ShadowFlow>> {
        if !self.contains(key) {
            return None;
        }
        self.live -= 1;
        self.slots[key.0 as usize].take().map(|(_, f)| f)
    }

    /// Take every replica out (takeover, reset), in slot order.
    pub fn drain(&mut self) -> Vec<ShadowFlow> {
        self.live = 0;
        std::mem::take(&mut self.slots).into_iter().flatten().map(|(_, f)| *f).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowtwin_engine::flow::FlowKey;
    use flowtwin_engine::replica::FlowImage;
    use flowtwin_engine::stack::{Listener, ServiceSpec, StackConfig};
    use flowtwin_engine::tcp::{TcbSnapshot, TcpConfig};
    use flowtwin_engine::wire::MacAddr;
    use std::net::Ipv4Addr;
    use flowtwin_engine::time::Duration;

    const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);

    fn cfg() -> StackConfig {
        StackConfig {
            vips: Vec::new(),
            listeners: vec![Listener { vip: VIP, port: 7, spec: ServiceSpec::Echo(Default::default()) }],
            tcp: TcpConfig::default(),
            flow_capacity: 16,
            isn_key: [0; 16],
            timer_tick: Duration::from_millis(1),
        }
    }

    fn flow(port: u16) -> ShadowFlow {
        let image = FlowImage {
            key: FlowKey::v4(Ipv4Addr::new(10, 0, 0, 1), port, VIP, 7),
            tcb: TcbSnapshot::default(),
            peer_mac: MacAddr::default(),
            vip_mac: MacAddr::default(),
            listener: 0,
        };
        ShadowFlow::new(&cfg(), image).expect("listener 0 exists")
    }

    fn port(f: &ShadowFlow) -> u16 {
        f.image.key.remote_port
    }

    #[test]
    fn generations_tell_reuses_of_a_slot_apart() {
        let mut t = ShadowSlots::default();
        assert!(t.insert((5, 1), flow(1001)).unwrap().is_none());
        assert_eq!(t.len(), 1);
        assert!(t.contains((5, 1)) && !t.contains((5, 2)) && !t.contains((4, 1)));
        assert!(t.get_mut((5, 2)).is_none(), "another generation is another flow");
        assert!(t.remove((5, 2)).is_none());
        assert_eq!(t.len(), 1);
        // The slot is reused before its close arrived: the new flow replaces the old one.
        let old = t.insert((5, 2), flow(1002)).unwrap().expect("old generation returned");
        assert_eq!(port(&old), 1001);
        assert_eq!(t.len(), 1);
        assert_eq!(port(t.get_mut((5, 2)).unwrap()), 1002);
        assert!(t.get_mut((5, 1)).is_none());
        assert_eq!(port(&t.remove((5, 2)).unwrap()), 1002);
        assert!(t.is_empty());
    }

    #[test]
    fn grows_on_demand_and_refuses_corrupt_slots() {
        let mut t = ShadowSlots::default();
        for s in [0u32, 70_000, 3, 69_999] {
            t.insert((s, 7), flow(s as u16)).unwrap();
        }
        assert_eq!(t.len(), 4);
        assert_eq!(t.insert((MAX_SLOTS, 1), flow(9)).err(), Some(SlotOutOfRange(MAX_SLOTS)));
        assert!(t.get_mut((u32::MAX, 7)).is_none() && t.remove((u32::MAX, 7)).is_none());
        assert_eq!(t.len(), 4);
        let all: Vec<u16> = t.drain().iter().map(port).collect();
        assert_eq!(all, [0, 3, 69_999u32 as u16, 70_000u32 as u16]);
        assert!(t.is_empty() && t.get_mut((3, 7)).is_none());
    }
}
