//! Building the eBPF object. It is compiled with nightly (`-Z build-std=core`) and
//! bpf-linker, then copied to `chronicle-agent/bpf/`, where the agent embeds it: users build
//! Chronicle with stable Rust alone. CI rebuilds it and fails when the shipped copy is stale.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

/// Where the agent embeds the object from.
pub const SHIPPED: &str = "chronicle-agent/bpf/chronicle-probes.bpf.o";
const TARGET: &str = "bpfel-unknown-none";

pub enum Mode {
    /// Overwrite the shipped object.
    Update,
    /// Compare with the shipped object; fail when they differ.
    Check,
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

pub fn setup_toolchain() -> Result<()> {
    let script = workspace_root().join("scripts/setup-ebpf-toolchain.sh");
    let status = Command::new("bash")
        .arg(&script)
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    ensure!(status.success(), "{} failed", script.display());
    Ok(())
}

pub fn build(mode: Mode) -> Result<()> {
    let root = workspace_root();
    if Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_err()
    {
        bail!(
            "bpf-linker is not installed: run `cargo xtask setup-toolchain` (or scripts/setup-ebpf-toolchain.sh)"
        );
    }
    // Paths are remapped so the object is byte-for-byte the same wherever it is built.
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo")
        });
    let rustflags = format!(
        "--remap-path-prefix={}=/chronicle --remap-path-prefix={}=/cargo",
        root.display(),
        home.display()
    );
    let target_dir = root.join("target");
    let status = Command::new("rustup")
        .args(["run", "nightly", "cargo", "build", "--package", "chronicle-ebpf", "--release"])
        .args(["--target", TARGET, "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags.replace(' ', "\x1f"))
        .env_remove("RUSTFLAGS")
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTUP_TOOLCHAIN")
        .current_dir(&root)
        .status()
        .context("running cargo +nightly (is the nightly toolchain installed? run `cargo xtask setup-toolchain`)")?;
    ensure!(status.success(), "building the eBPF object failed");
    let built = target_dir.join(TARGET).join("release/chronicle-probes");
    let fresh = std::fs::read(&built).with_context(|| format!("reading {}", built.display()))?;
    check_no_panic_paths(&fresh)?;
    let shipped = root.join(SHIPPED);
    match mode {
        Mode::Update => {
            std::fs::write(&shipped, &fresh)
                .with_context(|| format!("writing {}", shipped.display()))?;
            println!("updated {} ({} bytes)", SHIPPED, fresh.len());
        }
        Mode::Check => {
            let current = std::fs::read(&shipped)
                .with_context(|| format!("reading {}", shipped.display()))?;
            if current != fresh {
                bail!(
                    "{SHIPPED} is stale: it differs from the object built from chronicle-ebpf/ \
                     ({} vs {} bytes); run `cargo xtask build-ebpf` and commit the result",
                    current.len(),
                    fresh.len()
                );
            }
            println!("{SHIPPED} matches the source ({} bytes)", fresh.len());
        }
    }
    Ok(())
}

/// A reachable panic makes bpf-linker emit calls the verifier rejects; they show up as
/// `.text.unlikely.` sections. Catch them here, with a useful message, not at load time.
fn check_no_panic_paths(object: &[u8]) -> Result<()> {
    let needle = b".text.unlikely.";
    if object.windows(needle.len()).any(|w| w == needle) {
        bail!(
            "the eBPF object has a panic path (.text.unlikely. section): replace indexing with .get() and bound every loop"
        );
    }
    Ok(())
}
