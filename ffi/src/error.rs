//! One error type for every DPDK call: which operation failed, DPDK's errno and its message
//! (`rte_strerror`), plus an operator-facing hint where we know the usual cause.

use std::ffi::CStr;
use std::fmt;

use crate::sys;

/// A failed DPDK operation.
#[derive(Debug, Clone)]
pub struct Error {
    /// What we were doing, e.g. "rte_eth_dev_configure(port 0)".
    pub op: String,
    /// The positive errno DPDK reported (0 if it reported none).
    pub errno: i32,
    /// DPDK's text for `errno` (`rte_strerror`).
    pub message: String,
    /// What an operator should probably do about it.
    pub hint: Option<String>,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// From a negative return value (`-errno`) as most ethdev calls give.
    pub fn from_ret(op: impl Into<String>, ret: i32) -> Error {
        Error::from_errno(op, ret.saturating_abs())
    }

    /// From the thread's `rte_errno` (calls that return NULL or -1 set it).
    pub fn last(op: impl Into<String>) -> Error {
        // SAFETY: reads the thread-local rte_errno through the shim.
        let e = unsafe { sys::ft_errno() };
        Error::from_errno(op, e)
    }

    pub fn from_errno(op: impl Into<String>, errno: i32) -> Error {
        let message = if errno == 0 {
            "no error code reported (see the EAL log lines above)".to_owned()
        } else {
            // SAFETY: rte_strerror returns a pointer to a static or thread-local NUL-terminated
            // string for any errno value; we copy it before returning.
            unsafe {
                let p = sys::rte_strerror(errno);
                if p.is_null() {
                    format!("errno {errno}")
                } else {
                    CStr::from_ptr(p).to_string_lossy().into_owned()
                }
            }
        };
        Error {
            op: op.into(),
            errno,
            message,
            hint: None,
        }
    }

    /// A failure detected on our side of the boundary (bad argument, invariant).
    pub fn invalid(op: impl Into<String>, message: impl Into<String>) -> Error {
        Error {
            op: op.into(),
            errno: libc_einval(),
            message: message.into(),
            hint: None,
        }
    }

    /// A refusal on our side before DPDK was called, whose message says everything (no
    /// operation "failed").
    pub fn refused(message: impl Into<String>) -> Error {
        Error {
            op: String::new(),
            errno: 0,
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Error {
        self.hint = Some(hint.into());
        self
    }
}

const fn libc_einval() -> i32 {
    22
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.op.is_empty() {
            write!(f, "{}", self.message)?;
        } else {
            write!(f, "{} failed: {}", self.op, self.message)?;
        }
        if self.errno != 0 {
            write!(f, " (errno {})", self.errno)?;
        }
        if let Some(h) = &self.hint {
            write!(f, "; {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}
