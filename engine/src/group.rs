//! Ownership groups: the unit of role, epoch, replication and failover (issue 13, DESIGN §3).
//!
//! A group is a set of VIPs (later also port ranges of one VIP) that one engine owns at a
//! time. The data path asks "do I own the group of this frame's VIP now?" ([`GroupSet`]),
//! not "am I active?": an engine may own some groups and stand by for others (active-active
//! peers, each the other's standby), and a flow belongs to the group of its local address,
//! so it moves with it. Today's pair is one group of every VIP; a configuration without
//! `[[group]]` sections means exactly that.
//!
//! What decides ownership is not here: the sync core (a session per group and peer) or, with
//! N engines behind ECMP, an external agreement (a routing daemon's announcements, etcd).
//! The stack only obeys the set it is given, and gives a frame of a group it does not own
//! the standby's answer: a counted drop.

use std::fmt;

/// Most groups an engine can have: one bit each of a [`GroupSet`] (an atomic `u64` shared
/// with the control plane).
pub const MAX_GROUPS: usize = 64;

/// Index of a group in the engine's configuration (`StackConfig::groups`), the same on
/// every engine of the pair: replicated flows name their group through their VIP.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(pub u8);

impl GroupId {
    /// The group of a configuration without `[[group]]` sections: every VIP.
    pub const DEFAULT: GroupId = GroupId(0);
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "group {}", self.0)
    }
}

/// A set of groups: what an engine owns now. A bitset, so that the control plane can
/// publish it in one atomic store and a worker test a frame's group with one AND.
#[derive(Copy, Clone, Default, PartialEq, Eq, Hash)]
pub struct GroupSet(pub u64);

impl GroupSet {
    pub const NONE: GroupSet = GroupSet(0);

    /// Every one of `n` groups (`n` ≤ [`MAX_GROUPS`]; more are clamped).
    pub fn first(n: usize) -> GroupSet {
        match n {
            0 => GroupSet::NONE,
            n if n >= MAX_GROUPS => GroupSet(u64::MAX),
            n => GroupSet((1u64 << n) - 1),
        }
    }

    /// The set of just `g` (empty if `g` is out of range).
    pub fn of(g: GroupId) -> GroupSet {
        GroupSet(1u64.checked_shl(g.0 as u32).unwrap_or(0))
    }

    #[inline]
    pub fn contains(self, g: GroupId) -> bool {
        self.0 & GroupSet::of(g).0 != 0
    }

    #[inline]
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn union(self, o: GroupSet) -> GroupSet {
        GroupSet(self.0 | o.0)
    }

    /// The groups of `self` that are not in `o`.
    pub fn minus(self, o: GroupSet) -> GroupSet {
        GroupSet(self.0 & !o.0)
    }

    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    pub fn iter(self) -> impl Iterator<Item = GroupId> {
        (0..MAX_GROUPS as u8).map(GroupId).filter(move |g| self.contains(*g))
    }
}

impl fmt::Debug for GroupSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(|g| g.0)).finish()
    }
}

/// A group as configured: its name (for logs, metrics and `ctl`) — its VIPs name it back
/// (`Vip::group`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub name: String,
}

impl Group {
    pub fn new(name: impl Into<String>) -> Group {
        Group { name: name.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets() {
        assert_eq!(GroupSet::first(0), GroupSet::NONE);
        assert_eq!(GroupSet::first(3).0, 0b111);
        assert_eq!(GroupSet::first(64).0, u64::MAX);
        assert_eq!(GroupSet::first(99).0, u64::MAX);
        assert!(GroupSet::first(2).contains(GroupId(1)));
        assert!(!GroupSet::first(2).contains(GroupId(2)));
        assert!(!GroupSet::first(64).contains(GroupId(64)), "out of range is in no set");
        assert_eq!(GroupSet::of(GroupId(200)), GroupSet::NONE);
        let s = GroupSet::of(GroupId(0)).union(GroupSet::of(GroupId(5)));
        assert_eq!(s.len(), 2);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![GroupId(0), GroupId(5)]);
        assert_eq!(s.minus(GroupSet::of(GroupId(0))), GroupSet::of(GroupId(5)));
        assert_eq!(format!("{s:?}"), "{0, 5}");
    }
}
