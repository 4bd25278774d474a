//! flowtwin sync: delta records, per-worker SPSC rings, the sync core, the replication
//! protocol, the standby, heartbeats and takeover.
#![forbid(unsafe_code)]

pub mod coalesce;
mod conn;
pub mod delta;
pub mod node;
pub mod proto;
pub mod replicator;
pub mod ring;
pub mod session;
pub mod shadow;
pub mod status;
pub mod wait;

pub use crate::node::{start, start_sessions, Mode, SessionSpec, SyncConfig, SyncHandle, Takeover, TakeoverFn, TakeoverReason};
pub use proto::Role;
pub use replicator::{
    worker_channel, worker_channel_with_backlog, RingReplicator, WorkerLink, WorkerShared,
    RELEASE_ALL,
};
pub use status::{PeerState, SyncStatus};
pub use wait::{DoorbellOnly, Waiter, Woken};
