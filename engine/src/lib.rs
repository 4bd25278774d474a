//! flowtwin engine: wire parsing and rewrite, flow table, the sans-IO TCP state machine,
//! services and the worker loop. Everything that touches DPDK goes through `flowtwin-ffi`;
//! the TCP/flow core takes time and packets as arguments so it is deterministic and can be
//! replayed on a standby.
#![forbid(unsafe_code)]

pub mod capture;
pub mod commit;
pub mod config;
pub mod counters;
pub mod dataplane;
pub mod distribute;
pub mod ephemeral;
pub mod flow;
pub mod group;
pub mod iteration;
pub mod neighbor;
pub mod replica;
pub mod route;
pub mod roles;
pub mod seq;
pub mod service;
pub mod stack;
pub mod tcp;
pub mod time;
pub mod timer;
pub mod wire;
