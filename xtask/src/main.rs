//! Developer tasks: `cargo xtask <task>`. Nothing here is needed to build or run Chronicle.

mod bench;
mod ebpf;
mod fuzz;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what rebuilding the eBPF object needs (LLVM 22, rust-src, bpf-linker).
    SetupToolchain,
    /// Rebuild the eBPF object from source and update the copy shipped in chronicle-agent/bpf/.
    BuildEbpf,
    /// Rebuild the eBPF object and fail if the shipped copy differs (CI runs this).
    CheckEbpf,
    /// Run a benchmark and print its figures (see BENCHMARKS.md).
    Bench(bench::Args),
    /// Run the fuzz targets for a bounded time (nightly; installs cargo-fuzz).
    Fuzz(fuzz::Args),
}

fn main() {
    let cli = Cli::parse();
    let result: Result<()> = match cli.task {
        Task::SetupToolchain => ebpf::setup_toolchain(),
        Task::BuildEbpf => ebpf::build(ebpf::Mode::Update),
        Task::CheckEbpf => ebpf::build(ebpf::Mode::Check),
        Task::Bench(args) => bench::run(args),
        Task::Fuzz(args) => fuzz::run(args),
    };
    if let Err(error) = result {
        eprintln!("xtask: {error:#}");
        std::process::exit(1);
    }
}
