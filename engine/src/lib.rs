//! flowtwin engine: wire parsing and rewrite, flow table, the sans-IO TCP state machine,
//! services and the worker loop. Everything that touches DPDK goes through `flowtwin-ffi`;
//! the TCP/flow core takes time and packets as arguments so it is deterministic and can be
//! replayed on a standby.
#![forbid(unsafe_code)]

pub mod seq;
pub mod service;
pub mod time;
pub mod wire;
pub mod tcp;
pub mod flow;
