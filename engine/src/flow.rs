//! The per-worker flow table: connection 4-tuple → flow state, fixed capacity, no allocation
//! after [`FlowTable::new`] (DESIGN §2).
//!
//! Layout:
//! - a **slab** of `capacity` entries holding key and value; a flow is addressed by a stable
//!   [`FlowId`] (slab index + generation), so timers, replication records and the control
//!   socket can refer to a flow without holding a borrow. Removing a flow bumps the entry's
//!   generation, so a stale `FlowId` (e.g. left in a timer wheel) never reaches a new flow.
//! - an **index**: open addressing with linear probing over a power-of-two array of 8-byte
//!   slots `(hash tag, slab index)`, sized so the load factor stays ≤ 0.8. Deletion is by
//!   backward shift (Knuth vol. 3, §6.4, Algorithm R), so there are no tombstones and probe
//!   sequences never degrade over the life of the table.
//!
//! Hashing: an fx-style multiply–rotate hash over three 64-bit words (folded remote address,
//! folded local address, both ports), seeded per table. The slot is taken from the *top* bits
//! of the product (Fibonacci hashing) because the low bits of a multiplicative hash are weak.
//! The upper 32 bits are kept in the slot as a tag: most probe misses are rejected without
//! touching the slab. Symmetric RSS (both directions of a flow on one worker) is the NIC's job;
//! this table only ever sees the key oriented as (remote, local).
//!
//! The hash is not a keyed PRF: a remote host that can choose many (ip, port) pairs can still
//! build long probe runs. The per-table `seed` makes offline precomputation harder; a
//! SipHash-class hash would cost ~3× more per lookup.

use core::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Connection identity as seen by this engine: the client side (`remote_*`) and the service
/// address (VIP) and port it connected to (`local_*`). IPv4 addresses are stored IPv4-mapped
/// (`::ffff:a.b.c.d`, RFC 4291 §2.5.5.2) so one key type serves both families.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
pub struct FlowKey {
    pub remote_ip: Ipv6Addr,
    pub remote_port: u16,
    pub local_ip: Ipv6Addr,
    pub local_port: u16,
}

impl FlowKey {
    /// An IPv4 flow.
    #[inline]
    pub fn v4(remote_ip: Ipv4Addr, remote_port: u16, local_ip: Ipv4Addr, local_port: u16) -> Self {
        FlowKey {
            remote_ip: remote_ip.to_ipv6_mapped(),
            remote_port,
            local_ip: local_ip.to_ipv6_mapped(),
            local_port,
        }
    }

    /// An IPv6 flow.
    #[inline]
    pub fn v6(remote_ip: Ipv6Addr, remote_port: u16, local_ip: Ipv6Addr, local_port: u16) -> Self {
        FlowKey { remote_ip, remote_port, local_ip, local_port }
    }

    /// True if both addresses are IPv4-mapped.
    #[inline]
    pub fn is_v4(&self) -> bool {
        self.remote_ip.to_ipv4_mapped().is_some() && self.local_ip.to_ipv4_mapped().is_some()
    }

    /// 64-bit hash of the key under `seed`. Three multiply rounds whatever the family.
    #[inline]
    pub fn hash_with(&self, seed: u64) -> u64 {
        let r = u128::from(self.remote_ip);
        let l = u128::from(self.local_ip);
        // Fold each address to 64 bits first: for IPv4-mapped keys the high halves are the
        // constant 0 and the fold costs one xor; for IPv6 the rotation keeps both halves live.
        let w0 = (r as u64) ^ ((r >> 64) as u64).rotate_left(23);
        let w1 = (l as u64) ^ ((l >> 64) as u64).rotate_left(41);
        let w2 = (u64::from(self.remote_port) << 16) | u64::from(self.local_port);
        let h = fx(seed, w0);
        let h = fx(h, w1);
        fx(h, w2)
    }
}

/// Multiplier of rustc's FxHasher (2^64 / φ, forced odd).
const FX_K: u64 = 0x517c_c1b7_2722_0a95;

#[inline(always)]
fn fx(h: u64, w: u64) -> u64 {
    (h.rotate_left(5) ^ w).wrapping_mul(FX_K)
}

/// Stable handle of a flow: slab index plus the generation the entry had when the flow was
/// inserted. Copy, 8 bytes; valid until the flow is removed.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct FlowId {
    index: u32,
    gen: u32,
}

impl FlowId {
    /// Rebuild a handle from its parts (replication records, timer wheel).
    #[inline]
    pub const fn from_parts(index: u32, gen: u32) -> FlowId {
        FlowId { index, gen }
    }
    /// Slab index, in `0..capacity`.
    #[inline]
    pub const fn index(self) -> u32 {
        self.index
    }
    /// Generation of the slab entry this handle was issued for.
    #[inline]
    pub const fn generation(self) -> u32 {
        self.gen
    }
}

/// Why an insert failed. The value is dropped.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum InsertError {
    /// All `capacity` entries are in use: the caller drops the SYN and counts it.
    TableFull,
    /// The key is already present, under this id.
    Exists(FlowId),
}

impl fmt::Display for InsertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InsertError::TableFull => f.write_str("flow table full"),
            InsertError::Exists(id) => write!(f, "flow already present as {id:?}"),
        }
    }
}

impl std::error::Error for InsertError {}

/// Sentinel for "no slab index" in index slots and the free list.
const NIL: u32 = u32::MAX;

/// Largest capacity accepted: slab indices and the free list use `u32` with `NIL` reserved,
/// and the index (≥ 1.25 × capacity, power of two) must keep ≤ 32 hash bits for the tag.
pub const MAX_CAPACITY: usize = 1 << 30;

/// One index slot: the upper 32 bits of the key's hash and the slab index (`NIL` = empty).
#[derive(Copy, Clone, Debug)]
struct Slot {
    tag: u32,
    idx: u32,
}

const EMPTY_SLOT: Slot = Slot { tag: 0, idx: NIL };

struct Entry<V> {
    key: FlowKey,
    gen: u32,
    /// Next vacant entry when this one is vacant (intrusive free list).
    next_free: u32,
    value: Option<V>,
}

/// Fixed-capacity flow table. See the module documentation.
pub struct FlowTable<V> {
    index: Box<[Slot]>,
    /// `index.len() - 1`.
    mask: usize,
    /// `64 - log2(index.len())`: the slot is `hash >> shift`.
    shift: u32,
    seed: u64,
    slab: Box<[Entry<V>]>,
    free_head: u32,
    len: usize,
}

impl<V> FlowTable<V> {
    /// A table for up to `capacity` flows (clamped to [`MAX_CAPACITY`]), hash seed 0.
    pub fn new(capacity: usize) -> Self {
        Self::with_seed(capacity, 0)
    }

    /// A table with a per-worker hash seed (pick one at random at start-up).
    pub fn with_seed(capacity: usize, seed: u64) -> Self {
        let capacity = capacity.min(MAX_CAPACITY);
        // Load factor ≤ 0.8 ⇔ slots ≥ 1.25 × capacity; at least 2 slots so an empty slot
        // always exists and every probe loop terminates.
        let want = capacity + capacity.div_ceil(4);
        let slots = want.max(2).next_power_of_two();
        let bits = slots.trailing_zeros();
        let slab: Box<[Entry<V>]> = (0..capacity)
            .map(|i| Entry {
                key: FlowKey::v4(Ipv4Addr::UNSPECIFIED, 0, Ipv4Addr::UNSPECIFIED, 0),
                gen: 0,
                next_free: if i + 1 < capacity { (i + 1) as u32 } else { NIL },
                value: None,
            })
            .collect();
        FlowTable {
            index: vec![EMPTY_SLOT; slots].into_boxed_slice(),
            mask: slots - 1,
            shift: 64 - bits,
            seed,
            slab,
            free_head: if capacity > 0 { 0 } else { NIL },
            len: 0,
        }
    }

    /// Number of flows in the table.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maximum number of flows.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.slab.len()
    }

    /// Number of index slots (a power of two ≥ 1.25 × capacity).
    #[inline]
    pub fn index_slots(&self) -> usize {
        self.index.len()
    }

    #[inline]
    fn hash(&self, key: &FlowKey) -> u64 {
        key.hash_with(self.seed)
    }

    /// Home slot of a hash: its top bits.
    #[inline]
    fn home(&self, hash: u64) -> usize {
        (hash >> self.shift) as usize
    }

    /// Home slot recomputed from a stored 32-bit tag (the hash's top 32 bits; `shift ≥ 32`).
    #[inline]
    fn home_of_tag(&self, tag: u32) -> usize {
        ((u64::from(tag) << 32) >> self.shift) as usize
    }

    /// Index slot holding `key`, or the first empty slot of its probe run.
    #[inline]
    fn probe(&self, key: &FlowKey, hash: u64) -> Result<usize, usize> {
        let tag = (hash >> 32) as u32;
        let mut pos = self.home(hash);
        loop {
            let s = self.index[pos];
            if s.idx == NIL {
                return Err(pos);
            }
            if s.tag == tag && self.slab[s.idx as usize].key == *key {
                return Ok(pos);
            }
            pos = (pos + 1) & self.mask;
        }
    }

    /// Flow id of `key`, if present.
    #[inline]
    pub fn lookup(&self, key: &FlowKey) -> Option<FlowId> {
        let hash = self.hash(key);
        match self.probe(key, hash) {
            Ok(pos) => {
                let idx = self.index[pos].idx;
                Some(FlowId { index: idx, gen: self.slab[idx as usize].gen })
            }
            Err(_) => None,
        }
    }

    /// Insert a new flow. Never allocates.
    pub fn insert(&mut self, key: FlowKey, value: V) -> Result<FlowId, InsertError> {
        let hash = self.hash(&key);
        let pos = match self.probe(&key, hash) {
            Ok(pos) => {
                let idx = self.index[pos].idx;
                return Err(InsertError::Exists(FlowId {
                    index: idx,
                    gen: self.slab[idx as usize].gen,
                }));
            }
            Err(pos) => pos,
        };
        let idx = self.free_head;
        if idx == NIL {
            return Err(InsertError::TableFull);
        }
        let e = &mut self.slab[idx as usize];
        self.free_head = e.next_free;
        e.next_free = NIL;
        e.key = key;
        e.value = Some(value);
        let gen = e.gen;
        self.index[pos] = Slot { tag: (hash >> 32) as u32, idx };
        self.len += 1;
        Ok(FlowId { index: idx, gen })
    }

    #[inline]
    fn entry(&self, id: FlowId) -> Option<&Entry<V>> {
        self.slab
            .get(id.index as usize)
            .filter(|e| e.gen == id.gen && e.value.is_some())
    }

    /// The value of a live flow; `None` for a stale or out-of-range id.
    #[inline]
    pub fn get(&self, id: FlowId) -> Option<&V> {
        self.entry(id).and_then(|e| e.value.as_ref())
    }

    #[inline]
    pub fn get_mut(&mut self, id: FlowId) -> Option<&mut V> {
        self.slab
            .get_mut(id.index as usize)
            .filter(|e| e.gen == id.gen)
            .and_then(|e| e.value.as_mut())
    }

    /// Key of a live flow.
    #[inline]
    pub fn key(&self, id: FlowId) -> Option<&FlowKey> {
        self.entry(id).map(|e| &e.key)
    }

    /// Key and value of a live flow.
    #[inline]
    pub fn get_key_value_mut(&mut self, id: FlowId) -> Option<(&FlowKey, &mut V)> {
        let e = self.slab.get_mut(id.index as usize).filter(|e| e.gen == id.gen)?;
        let key = &e.key;
        e.value.as_mut().map(|v| (key, v))
    }

    /// Key and value of a live flow, and the value of another live flow `other` (a link
    /// partner) at the same time; `None` for `other` if it is `id` itself or not live.
    pub fn get_key_value_and_other_mut(&mut self, id: FlowId, other: Option<FlowId>) -> Option<(&FlowKey, &mut V, Option<&mut V>)> {
        let (i, live) = (id.index as usize, |e: &Entry<V>, gen: u32| e.gen == gen && e.value.is_some());
        if !self.slab.get(i).is_some_and(|e| live(e, id.gen)) {
            return None;
        }
        let j = other.filter(|o| o.index != id.index && self.slab.get(o.index as usize).is_some_and(|e| live(e, o.gen)));
        let (e, o) = match j {
            None => (&mut self.slab[i], None),
            Some(o) => {
                let j = o.index as usize;
                let (lo, hi) = self.slab.split_at_mut(i.max(j));
                if i < j {
                    (&mut lo[i], Some(&mut hi[0]))
                } else {
                    (&mut hi[0], Some(&mut lo[j]))
                }
            }
        };
        let key = &e.key;
        Some((key, e.value.as_mut()?, o.and_then(|o| o.value.as_mut())))
    }

    /// True if `id` names a live flow.
    #[inline]
    pub fn contains(&self, id: FlowId) -> bool {
        self.entry(id).is_some()
    }

    /// Remove a flow and return its value; `None` for a stale id. The entry's generation is
    /// bumped so `id` (and any copy of it) stops resolving.
    pub fn remove(&mut self, id: FlowId) -> Option<V> {
        let key = self.entry(id)?.key;
        let hash = self.hash(&key);
        // The key is present, so the probe finds it.
        let Ok(pos) = self.probe(&key, hash) else {
            debug_assert!(false, "slab entry without index slot");
            return None;
        };
        self.delete_slot(pos);
        let e = &mut self.slab[id.index as usize];
        e.gen = e.gen.wrapping_add(1);
        e.next_free = self.free_head;
        self.free_head = id.index;
        self.len -= 1;
        e.value.take()
    }

    /// Remove by key.
    pub fn remove_key(&mut self, key: &FlowKey) -> Option<V> {
        let id = self.lookup(key)?;
        self.remove(id)
    }

    /// Backward-shift deletion of index slot `hole` (Knuth Algorithm R): walk the probe run
    /// after the hole; an entry may move back into the hole unless its home lies cyclically in
    /// `(hole, i]` (moving it would put it before its home).
    fn delete_slot(&mut self, mut hole: usize) {
        let mask = self.mask;
        let mut i = hole;
        loop {
            i = (i + 1) & mask;
            let s = self.index[i];
            if s.idx == NIL {
                break;
            }
            let home = self.home_of_tag(s.tag);
            let home_in_gap = (home.wrapping_sub(hole + 1) & mask) < (i.wrapping_sub(hole) & mask);
            if home_in_gap {
                continue;
            }
            self.index[hole] = s;
            hole = i;
        }
        self.index[hole] = EMPTY_SLOT;
    }

    /// Remove every flow (generations are bumped). O(capacity).
    pub fn clear(&mut self) {
        for s in self.index.iter_mut() {
            *s = EMPTY_SLOT;
        }
        let cap = self.slab.len();
        for (i, e) in self.slab.iter_mut().enumerate() {
            if e.value.take().is_some() {
                e.gen = e.gen.wrapping_add(1);
            }
            e.next_free = if i + 1 < cap { (i + 1) as u32 } else { NIL };
        }
        self.free_head = if cap > 0 { 0 } else { NIL };
        self.len = 0;
    }

    /// Live flows in slab order.
    pub fn iter(&self) -> impl Iterator<Item = (FlowId, &FlowKey, &V)> + '_ {
        self.slab.iter().enumerate().filter_map(|(i, e)| {
            e.value
                .as_ref()
                .map(|v| (FlowId { index: i as u32, gen: e.gen }, &e.key, v))
        })
    }

    /// Live flows in slab order, values mutable.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (FlowId, &FlowKey, &mut V)> + '_ {
        self.slab.iter_mut().enumerate().filter_map(|(i, e)| {
            let gen = e.gen;
            let key = &e.key;
            e.value
                .as_mut()
                .map(|v| (FlowId { index: i as u32, gen }, key, v))
        })
    }

    /// Longest probe distance currently in the index (diagnostics, tests).
    pub fn max_probe_len(&self) -> usize {
        let mut max = 0;
        for (pos, s) in self.index.iter().enumerate() {
            if s.idx != NIL {
                let d = pos.wrapping_sub(self.home_of_tag(s.tag)) & self.mask;
                max = max.max(d);
            }
        }
        max
    }
}

impl<V> fmt::Debug for FlowTable<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlowTable")
            .field("len", &self.len)
            .field("capacity", &self.capacity())
            .field("index_slots", &self.index.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn k(n: u32) -> FlowKey {
        FlowKey::v4(Ipv4Addr::from(0x0a00_0000 | (n >> 16)), n as u16, Ipv4Addr::new(192, 0, 2, 1), 80)
    }

    #[test]
    fn sizing() {
        let t: FlowTable<u8> = FlowTable::new(1000);
        assert_eq!(t.capacity(), 1000);
        assert_eq!(t.index_slots(), 2048);
        assert!(t.capacity() * 5 <= t.index_slots() * 4);
        let t: FlowTable<u8> = FlowTable::new(0);
        assert_eq!(t.capacity(), 0);
        assert_eq!(t.index_slots(), 2);
        let t: FlowTable<u8> = FlowTable::new(4);
        assert_eq!(t.index_slots(), 8);
    }

    #[test]
    fn insert_lookup_remove() {
        let mut t = FlowTable::new(16);
        let a = t.insert(k(1), "a").unwrap();
        let b = t.insert(k(2), "b").unwrap();
        assert_eq!(t.lookup(&k(1)), Some(a));
        assert_eq!(t.lookup(&k(2)), Some(b));
        assert_eq!(t.lookup(&k(3)), None);
        assert_eq!(t.get(a), Some(&"a"));
        assert_eq!(t.key(b), Some(&k(2)));
        assert_eq!(t.insert(k(1), "x"), Err(InsertError::Exists(a)));
        *t.get_mut(b).unwrap() = "B";
        assert_eq!(t.remove(b), Some("B"));
        assert_eq!(t.remove(b), None);
        assert_eq!(t.get(b), None);
        assert_eq!(t.lookup(&k(2)), None);
        assert_eq!(t.len(), 1);
        // The slot is reused with a new generation; the old id stays dead.
        let c = t.insert(k(3), "c").unwrap();
        assert_eq!(c.index(), b.index());
        assert_ne!(c.generation(), b.generation());
        assert_eq!(t.get(b), None);
        assert_eq!(t.get(c), Some(&"c"));
    }

    #[test]
    fn full_table() {
        let mut t = FlowTable::new(100);
        let ids: Vec<_> = (0..100).map(|i| t.insert(k(i), i).unwrap()).collect();
        assert_eq!(t.len(), 100);
        assert_eq!(t.insert(k(1000), 0), Err(InsertError::TableFull));
        // Existing keys are still reported as such when full.
        assert_eq!(t.insert(k(5), 0), Err(InsertError::Exists(ids[5])));
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(t.lookup(&k(i as u32)), Some(*id));
        }
        assert_eq!(t.lookup(&k(1000)), None);
        t.remove(ids[42]).unwrap();
        let n = t.insert(k(1000), 1000).unwrap();
        assert_eq!(n.index(), ids[42].index());
        assert_eq!(t.iter().count(), 100);
        t.clear();
        assert!(t.is_empty());
        assert_eq!(t.get(n), None);
        assert_eq!(t.insert(k(7), 7).map(|id| t.get(id).copied()).ok(), Some(Some(7)));
    }

    #[test]
    fn zero_capacity() {
        let mut t = FlowTable::new(0);
        assert_eq!(t.insert(k(1), ()), Err(InsertError::TableFull));
        assert_eq!(t.lookup(&k(1)), None);
        assert_eq!(t.get(FlowId::from_parts(0, 0)), None);
        assert_eq!(t.remove(FlowId::from_parts(5, 0)), None);
    }

    #[test]
    fn v6_and_v4_are_distinct() {
        let v4 = FlowKey::v4(Ipv4Addr::new(10, 0, 0, 1), 1234, Ipv4Addr::new(10, 0, 0, 2), 80);
        let v6 = FlowKey::v6("2001:db8::1".parse().unwrap(), 1234, "2001:db8::2".parse().unwrap(), 80);
        assert!(v4.is_v4());
        assert!(!v6.is_v4());
        let mut t = FlowTable::new(4);
        let a = t.insert(v4, 4).unwrap();
        let b = t.insert(v6, 6).unwrap();
        assert_eq!(t.lookup(&v4), Some(a));
        assert_eq!(t.lookup(&v6), Some(b));
    }

    #[test]
    fn probe_lengths_stay_short_for_sequential_ports() {
        // One client, many source ports: the common benchmark pattern.
        let mut t = FlowTable::new(50_000);
        for p in 0..50_000u32 {
            let key = FlowKey::v4(Ipv4Addr::new(10, 0, 0, 1), (p % 65536) as u16, Ipv4Addr::new(10, 0, 0, 2), (80 + p / 65536) as u16);
            t.insert(key, ()).unwrap();
        }
        assert!(t.max_probe_len() < 64, "max probe {}", t.max_probe_len());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u16),
        Remove(u16),
        Lookup(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        // A small key space forces collisions, reuse and full-table hits.
        prop_oneof![
            (0u16..96).prop_map(Op::Insert),
            (0u16..96).prop_map(Op::Remove),
            (0u16..96).prop_map(Op::Lookup),
        ]
    }

    proptest! {
        #[test]
        fn matches_hashmap_model(cap in 0usize..70, seed in any::<u64>(), ops in proptest::collection::vec(op(), 0..600)) {
            let mut t = FlowTable::with_seed(cap, seed);
            let mut model: HashMap<u16, (FlowId, u32)> = HashMap::new();
            let mut stale: Vec<FlowId> = Vec::new();
            let key = |n: u16| {
                // Mix v4 and v6 keys.
                match n % 3 {
                    0 => FlowKey::v6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, n), 443, Ipv6Addr::LOCALHOST, 443),
                    _ => k(u32::from(n) * 7919),
                }
            };
            for (step, op) in ops.into_iter().enumerate() {
                let step = step as u32;
                match op {
                    Op::Insert(n) => {
                        let r = t.insert(key(n), step);
                        match model.get(&n) {
                            Some(&(id, _)) => prop_assert_eq!(r, Err(InsertError::Exists(id))),
                            None if model.len() == cap => prop_assert_eq!(r, Err(InsertError::TableFull)),
                            None => {
                                let id = r.unwrap();
                                prop_assert!((id.index() as usize) < cap);
                                model.insert(n, (id, step));
                            }
                        }
                    }
                    Op::Remove(n) => {
                        match model.remove(&n) {
                            Some((id, v)) => {
                                prop_assert_eq!(t.remove(id), Some(v));
                                stale.push(id);
                            }
                            None => prop_assert_eq!(t.remove_key(&key(n)), None),
                        }
                    }
                    Op::Lookup(n) => {
                        prop_assert_eq!(t.lookup(&key(n)), model.get(&n).map(|e| e.0));
                    }
                }
                prop_assert_eq!(t.len(), model.len());
            }
            for (n, (id, v)) in &model {
                prop_assert_eq!(t.lookup(&key(*n)), Some(*id));
                prop_assert_eq!(t.get(*id), Some(v));
                prop_assert_eq!(t.key(*id), Some(&key(*n)));
            }
            for id in stale {
                // A stale id never resolves, even if its slot was reused.
                if let Some(v) = t.get(id) {
                    prop_assert!(model.values().any(|(live, lv)| *live == id && lv == v));
                }
            }
            prop_assert_eq!(t.iter().count(), model.len());
            let mut ids: Vec<_> = t.iter().map(|(id, _, _)| id).collect();
            ids.sort();
            let mut want: Vec<_> = model.values().map(|e| e.0).collect();
            want.sort();
            prop_assert_eq!(ids, want);
        }
    }
}
