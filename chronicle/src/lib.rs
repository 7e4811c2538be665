//! Chronicle records what functions of a running program receive and return.
//!
//! This crate is the library side of it: the [`CallRecord`], the [`storage`] backends and
//! the [`writer`] that feeds them off the capture path, the [`export`] format, span export
//! to OpenTelemetry collectors ([`otlp`]), and the [`time`] formatting they share.

pub mod analysis;
pub mod ask;
pub mod capture;
pub mod config;
#[cfg(feature = "dashboard")]
pub mod dashboard;
pub mod export;
pub mod limits;
#[cfg(feature = "mcp")]
pub mod mcp;
pub mod monitor;
pub mod otlp;
pub mod pipeline;
pub mod record;
pub mod redact;
pub mod replay;
pub mod sampling;
pub mod storage;
pub mod testgen;
pub mod time;
pub mod writer;

#[cfg(test)]
mod test_util;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

/// Records the calls of a Rust function; see [`capture`](mod@capture) for where they go.
pub use chronicle_macros::capture;
pub use record::{CallRecord, Status, Value};
