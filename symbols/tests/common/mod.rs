//! Fixture programs, compiled at test time from `tests/fixtures` into Cargo's per-target
//! temporary directory.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use chronicle_symbols::plan::{DecodedArgs, DecodedReturn};
use chronicle_symbols::run::Memory;
use chronicle_symbols::{ElfFile, FunctionPlan};

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

/// `orders.c` + `orders_extra.c`, with debug info and `flags`, into `out`.
fn build_orders(out: &str, flags: &[&str]) {
    let (a, b) = (fixture("orders.c"), fixture("orders_extra.c"));
    let mut args = vec!["-g"];
    args.extend_from_slice(flags);
    args.extend(["-o", out, a.to_str().unwrap(), b.to_str().unwrap()]);
    run("gcc", &args);
}

pub fn c_program() -> PathBuf {
    static CELL: OnceLock<PathBuf> = OnceLock::new();
    build_once(&CELL, "orders-c", |out| {
        build_orders(out, &["-O0", "-fPIE", "-pie", "-Wl,--build-id"])
    })
}

pub fn c_program_no_pie() -> PathBuf {
    static CELL: OnceLock<PathBuf> = OnceLock::new();
    build_once(&CELL, "orders-c-nopie", |out| {
        build_orders(out, &["-O0", "-fno-pie", "-no-pie"])
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

pub fn c_program_o2() -> PathBuf {
    static CELL: OnceLock<PathBuf> = OnceLock::new();
    build_once(&CELL, "orders-c-o2", |out| {
        build_orders(out, &["-O2", "-fno-inline"])
    })
}

/// Runs probe plans the way the eBPF program does, against registers and memory set up
/// by the test: decoding can be tested on exact bytes without a kernel.
#[derive(Default)]
pub struct Machine {
    pub regs: [u64; 16],
    memory: Vec<(u64, Vec<u8>)>,
    /// Words an entry probe saved for the return probe.
    pub saved: Vec<u64>,
}

/// DWARF register numbers of the SysV integer argument registers.
pub const ARG_REGS: [usize; 6] = [5, 4, 1, 2, 8, 9];

impl Machine {
    pub fn arg(mut self, n: usize, value: u64) -> Self {
        self.regs[ARG_REGS[n]] = value;
        self
    }

    pub fn reg(mut self, reg: usize, value: u64) -> Self {
        self.regs[reg] = value;
        self
    }

    pub fn memory(mut self, address: u64, bytes: &[u8]) -> Self {
        self.memory.push((address, bytes.to_vec()));
        self
    }

    pub fn decode_entry(&self, plan: &FunctionPlan) -> DecodedArgs {
        plan.read_entry(&self.regs, self)
    }

    /// The words the entry probe would save for the return probe.
    pub fn saves(&self, plan: &FunctionPlan) -> Vec<u64> {
        plan.entry_saves(&self.regs, self)
    }

    pub fn decode_return(&self, plan: &FunctionPlan) -> DecodedReturn {
        plan.read_return(&self.regs, self, &self.saved)
    }
}

impl Memory for Machine {
    fn read(&self, address: u64, buf: &mut [u8]) -> usize {
        let found = self.memory.iter().find_map(|(start, bytes)| {
            let from = usize::try_from(address.checked_sub(*start)?).ok()?;
            bytes.get(from..)
        });
        let bytes = found.unwrap_or_default();
        let n = bytes.len().min(buf.len());
        buf[..n].copy_from_slice(&bytes[..n]);
        n
    }
}

/// `tests/fixtures/shapes.c` of the workspace, at -O2.
pub fn shapes_o2() -> PathBuf {
    static CELL: OnceLock<PathBuf> = OnceLock::new();
    build_once(&CELL, "shapes-O2", |out| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/shapes.c");
        run("gcc", &["-g", "-O2", "-o", out, src.to_str().unwrap()]);
    })
}
