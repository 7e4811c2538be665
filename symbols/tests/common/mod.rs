//! Fixture programs, compiled at test time from `tests/fixtures` into Cargo's per-target
//! temporary directory.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use chronicle_symbols::ElfFile;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn out_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("chronicle-symbols-fixtures");
    std::fs::create_dir_all(&dir).expect("create the fixture output folder");
    dir
}

/// Runs a command and panics with its output when it fails.
#[track_caller]
pub fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}; is it installed?"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Builds `out` (a file name in `out_dir()`) once per test binary.
fn build_once(cell: &'static OnceLock<PathBuf>, out: &str, build: impl FnOnce(&str)) -> PathBuf {
    cell.get_or_init(|| {
        let path = out_dir().join(out);
        // Build under a temporary name so a concurrent reader never sees a partial file.
        let tmp = out_dir().join(format!("{out}.{}.tmp", std::process::id()));
        build(tmp.to_str().expect("utf-8 temp path"));
        std::fs::rename(&tmp, &path).expect("move the built fixture in place");
        path
    })
    .clone()
}

pub fn c_program() -> PathBuf {
    static CELL: OnceLock<PathBuf> = OnceLock::new();
    build_once(&CELL, "orders-c", |out| {
        let (a, b) = (fixture("orders.c"), fixture("orders_extra.c"));
        run(
            "gcc",
            &[
                "-g",
                "-O0",
                "-fPIE",
                "-pie",
                "-Wl,--build-id",
                "-o",
                out,
                a.to_str().unwrap(),
                b.to_str().unwrap(),
            ],
        );
    })
}

pub fn c_program_no_pie() -> PathBuf {
    static CELL: OnceLock<PathBuf> = OnceLock::new();
    build_once(&CELL, "orders-c-nopie", |out| {
        let (a, b) = (fixture("orders.c"), fixture("orders_extra.c"));
        run(
            "gcc",
            &[
                "-g",
                "-O0",
                "-fno-pie",
                "-no-pie",
                "-o",
                out,
                a.to_str().unwrap(),
                b.to_str().unwrap(),
            ],
        );
    })
}

pub fn cpp_program() -> PathBuf {
    static CELL: OnceLock<PathBuf> = OnceLock::new();
    build_once(&CELL, "shop-cpp", |out| {
        run(
            "g++",
            &[
                "-g",
                "-O0",
                "-o",
                out,
                fixture("shop.cpp").to_str().unwrap(),
            ],
        );
    })
}

pub fn rust_program() -> PathBuf {
    static CELL: OnceLock<PathBuf> = OnceLock::new();
    build_once(&CELL, "app-rust", |out| {
        let src = fixture("app.rs");
        run(
            "rustc",
            &[
                "-g",
                "-C",
                "opt-level=0",
                "--crate-name",
                "my_app",
                "-o",
                out,
                src.to_str().unwrap(),
            ],
        );
    })
}

pub fn rust_program_v0() -> PathBuf {
    static CELL: OnceLock<PathBuf> = OnceLock::new();
    build_once(&CELL, "app-rust-v0", |out| {
        let src = fixture("app.rs");
        run(
            "rustc",
            &[
                "-g",
                "-C",
                "opt-level=0",
                "-C",
                "symbol-mangling-version=v0",
                "--crate-name",
                "my_app",
                "-o",
                out,
                src.to_str().unwrap(),
            ],
        );
    })
}

#[track_caller]
pub fn open(path: &Path) -> ElfFile {
    ElfFile::open(path).unwrap_or_else(|e| panic!("{e}"))
}
