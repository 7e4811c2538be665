//! Linux capture: loads Chronicle's eBPF object, resolves `--func` names in a process's
//! executable and shared libraries, attaches entry and return probes with compiled capture
//! plans, reads the ring buffer, pairs entries with returns and decodes them into
//! [`chronicle::CallRecord`]s for the pipeline. Storage and analysis live elsewhere.

#![cfg(target_os = "linux")]

pub mod deps;
mod error;
mod lower;
pub mod marshal;
pub mod pairing;
pub mod replay;
mod session;
pub mod sys;

pub use deps::{DependencyStats, Tracking};
pub use error::AgentError;
pub use session::{
    AttachOptions, FunctionStats, RunSummary, Session, StopReason, Target, TracedFunction,
};
