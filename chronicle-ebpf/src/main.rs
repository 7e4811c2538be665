//! Chronicle's eBPF programs. One generic entry probe and one generic return probe run the
//! capture plan that user space compiled for the probe that fired (found by attach cookie);
//! a raw tracepoint on thread exit closes calls that will never return.
//!
//! Policy lives in user space. These programs only copy registers and memory into the ring
//! buffer, and count everything they could not do.

#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod probes;

/// `cargo build --workspace` compiles this crate for the host too; there is nothing to run.
#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("chronicle-probes is an eBPF object: build it with `cargo xtask build-ebpf`");
}
