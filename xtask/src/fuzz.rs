//! `cargo xtask fuzz`: runs each fuzz target of `fuzz/` for a bounded time (cargo-fuzz,
//! nightly), with a real binary as the decode target's subject and the DWARF target's seed.

use std::process::Command;

use anyhow::{Context, Result, ensure};

use crate::ebpf::workspace_root;

#[derive(clap::Args)]
pub struct Args {
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Only this target (`location`, `decode`, `dwarf`).
    #[arg(long)]
    pub target: Option<String>,
}

pub fn run(args: Args) -> Result<()> {
    let root = workspace_root();
    let has_fuzz = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_fuzz {
        let status = Command::new("cargo")
            .args(["install", "cargo-fuzz", "--locked"])
            .status()
            .context("running cargo install")?;
        ensure!(status.success(), "installing cargo-fuzz failed");
    }
    // The decode target decodes events for a real binary; the DWARF target mutates it.
    let dir = root.join("target/fuzz-subjects");
    std::fs::create_dir_all(&dir)?;
    let subject = dir.join("shapes-O2");
    let status = Command::new("cc")
        .args(["-g", "-O2", "-o"])
        .arg(&subject)
        .arg(root.join("tests/fixtures/shapes.c"))
        .status()
        .context("running cc")?;
    ensure!(status.success(), "compiling the fuzz subject failed");
    let corpus = root.join("fuzz/corpus/dwarf");
    std::fs::create_dir_all(&corpus)?;
    std::fs::copy(&subject, corpus.join("shapes-O2"))?;

    let targets = ["location", "decode", "dwarf"];
    for target in targets
        .iter()
        .filter(|t| args.target.as_deref().is_none_or(|only| only == **t))
    {
        println!("fuzzing {target} for {} s", args.seconds);
        let status = Command::new("cargo")
            .args(["+nightly", "fuzz", "run", target])
            .arg("--")
            .arg(format!("-max_total_time={}", args.seconds))
            .arg("-max_len=65536")
            .env("CHRONICLE_FUZZ_BINARY", &subject)
            .current_dir(root.join("fuzz"))
            .status()
            .context("running cargo fuzz")?;
        ensure!(
            status.success(),
            "fuzz target {target} found a crash (see fuzz/artifacts/)"
        );
    }
    Ok(())
}
