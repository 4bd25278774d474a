//! flowtwin sync: delta records, per-worker SPSC rings, the sync core, the replication
//! protocol, the standby, heartbeats and takeover.
#![forbid(unsafe_code)]

pub mod delta;
pub mod ring;
