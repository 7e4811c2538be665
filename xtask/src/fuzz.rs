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
    /// Only this target (`location`, `decode`, `dwarf`, `config`, `ask`).
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

    // Seeds for the text targets: the README's settings, and one question per intent.
    let seeds: [(&str, &[(&str, &str)]); 2] = [
        ("config", &[("readme.toml", CONFIG_SEED)]),
        ("ask", ASK_SEEDS),
    ];
    for (target, files) in seeds {
        let corpus = root.join("fuzz/corpus").join(target);
        std::fs::create_dir_all(&corpus)?;
        for (name, text) in files {
            std::fs::write(corpus.join(name), text)?;
        }
    }

    let targets = ["location", "decode", "dwarf", "config", "ask"];
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

const CONFIG_SEED: &str = r#"storage_backend = "sqlite"
sampling_rate = 0.1
sampling_strategy = "clustering"
cluster_similarity_threshold = 0.9
redaction_patterns = ['order-\d+', '(?i)secret']
redaction_fields = ["pin"]
limit_per_function = 10000
limit_action = "sample"
overflow_sample_rate = 0.05
type_limits = [{ field_path = "order.kind", limit_per_type = 5 }]
"#;

/// `known functions (comma-separated)\nquestion`, as the ask target reads them.
const ASK_SEEDS: &[(&str, &str)] = &[
    (
        "errors",
        "orders::process_order,auth::check\nWhat inputs cause errors in process_order?",
    ),
    (
        "slowest",
        "process_order\nShow me the 10 slowest calls to process_order",
    ),
    (
        "builds",
        "process_order\nHow did process_order change between builds 5d41402a and 7f3c9e01?",
    ),
    (
        "since",
        "process_order\nHow has process_order changed in the last 2 hours?",
    ),
    (
        "frequency",
        "a,b\nHow often is b called per minute since yesterday?",
    ),
    ("inputs", "x\nWhat do the inputs to x look like?"),
    ("examples", "x\nShow me 5 examples of x"),
    ("deps", "x\nWhat does x call?"),
];
