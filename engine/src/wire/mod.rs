//! Wire formats: zero-copy checked views over frame bytes plus owned `repr` types.
//! (being written; `repr` is fixed and shared with the TCP core)
pub mod repr;
pub use repr::*;
