//! Helpers for the end-to-end tests: compile fixture programs, find the `chronicle` binary,
//! run fixtures and the CLI, and require BPF where the tests need it.

pub mod browser;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;

/// The workspace root.
pub fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
}

/// Where tests put what they build and write: `<target>/e2e`.
fn tmp_root() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace().join("target"), PathBuf::from);
    target.join("e2e")
}

/// A scratch directory for one test, emptied first.
pub fn scratch(name: &str) -> PathBuf {
    let dir = tmp_root().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Whether this process may load and attach eBPF programs. When it may not, a test that
/// needs BPF either panics (`CHRONICLE_REQUIRE_BPF=1`, as in CI) or says loudly that it did
/// not run and returns `false`.
pub fn bpf_available(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc_geteuid() } == 0;
    if root {
        return true;
    }
    if std::env::var("CHRONICLE_REQUIRE_BPF").as_deref() == Ok("1") {
        panic!("{test} needs root (CAP_BPF + CAP_PERFMON) and CHRONICLE_REQUIRE_BPF=1 is set");
    }
    eprintln!(
        "NOT RUN: {test} needs root for eBPF; run the tests with sudo (CI sets CHRONICLE_REQUIRE_BPF=1)"
    );
    false
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// Optimisation level of a fixture build.
#[derive(Clone, Copy, Debug)]
pub enum Opt {
    O0,
    O2,
}

impl Opt {
    fn flag(self) -> &'static str {
        match self {
            Opt::O0 => "0",
            Opt::O2 => "2",
        }
    }
}

/// Compiles `tests/fixtures/<name>.c` with debug info; returns the binary's path.
pub fn build_c(name: &str, opt: Opt) -> PathBuf {
    once(&format!("build_c:{name}:{}", opt.flag()), || {
        build_c_uncached(name, opt)
    })
}

/// As [`build_c`], with more compiler arguments after the source (`-lsqlite3`, `-I...`).
pub fn build_c_with(name: &str, opt: Opt, args: &[&str]) -> PathBuf {
    once(&format!("build_c:{name}:{}", opt.flag()), || {
        build_c_linked(name, opt, args)
    })
}

fn build_c_uncached(name: &str, opt: Opt) -> PathBuf {
    build_c_linked(name, opt, &[])
}

fn build_c_linked(name: &str, opt: Opt, args: &[&str]) -> PathBuf {
    let src = workspace().join("tests/fixtures").join(format!("{name}.c"));
    let out = fixture_dir().join(format!("{name}-O{}", opt.flag()));
    let tmp = unique(&out);
    run_ok(
        Command::new("cc")
            .args(["-g", &format!("-O{}", opt.flag()), "-pthread", "-o"])
            .arg(&tmp)
            .arg(&src)
            .args(args),
    );
    std::fs::rename(&tmp, &out).expect("move fixture into place");
    out
}

/// Compiles `tests/fixtures/<name>.cpp` with debug info; returns the binary's path.
pub fn build_cpp(name: &str, opt: Opt) -> PathBuf {
    once(&format!("build_cpp:{name}:{}", opt.flag()), || {
        build_cpp_uncached(name, opt)
    })
}

fn build_cpp_uncached(name: &str, opt: Opt) -> PathBuf {
    let src = workspace()
        .join("tests/fixtures")
        .join(format!("{name}.cpp"));
    let out = fixture_dir().join(format!("{name}-O{}", opt.flag()));
    let tmp = unique(&out);
    run_ok(
        Command::new("c++")
            .args(["-g", &format!("-O{}", opt.flag()), "-o"])
            .arg(&tmp)
            .arg(&src),
    );
    std::fs::rename(&tmp, &out).expect("move fixture into place");
    out
}

/// Builds `libledger.so` and `ledger_app`, which calls it; returns `(app, library)`.
pub fn build_ledger() -> (PathBuf, PathBuf) {
    let fixtures = workspace().join("tests/fixtures");
    let lib = fixture_dir().join("libledger.so");
    let tmp = unique(&lib);
    run_ok(
        Command::new("cc")
            .args(["-g", "-O2", "-shared", "-fPIC", "-o"])
            .arg(&tmp)
            .arg(fixtures.join("ledger.c")),
    );
    std::fs::rename(&tmp, &lib).expect("move fixture into place");
    let app = fixture_dir().join("ledger_app");
    let tmp = unique(&app);
    let dir = fixture_dir();
    run_ok(
        Command::new("cc")
            .args(["-g", "-O2", "-o"])
            .arg(&tmp)
            .arg(fixtures.join("ledger_app.c"))
            .arg(format!("-L{}", dir.display()))
            .arg(format!("-Wl,-rpath,{}", dir.display()))
            .arg("-lledger"),
    );
    std::fs::rename(&tmp, &app).expect("move fixture into place");
    (app, lib)
}

/// A private path next to `out`: tests build the same fixture concurrently, and each moves
/// its finished build into place atomically.
fn unique(out: &Path) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    out.with_extension(format!("tmp{}-{n}", std::process::id()))
}

/// Compiles `tests/fixtures/<name>.rs` with debug info; returns the binary's path.
pub fn build_rust(name: &str, opt: Opt) -> PathBuf {
    once(&format!("build_rust:{name}:{}", opt.flag()), || {
        build_rust_uncached(name, opt)
    })
}

fn build_rust_uncached(name: &str, opt: Opt) -> PathBuf {
    let src = workspace()
        .join("tests/fixtures")
        .join(format!("{name}.rs"));
    let out = fixture_dir().join(format!("{name}-O{}", opt.flag()));
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let tmp = unique(&out);
    run_ok(
        Command::new(rustc)
            .args([
                "--edition",
                "2024",
                "-g",
                "-C",
                &format!("opt-level={}", opt.flag()),
                "--crate-name",
                name,
                "-o",
            ])
            .arg(&tmp)
            .arg(&src),
    );
    std::fs::rename(&tmp, &out).expect("move fixture into place");
    out
}

/// Builds each fixture once per test binary: tests run in parallel, and a rebuild would
/// replace a binary another test is running and tracing.
fn once(key: &str, build: impl FnOnce() -> PathBuf) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, path)) = built.iter().find(|(k, _)| k == key) {
        return path.clone();
    }
    let path = build();
    built.push((key.to_owned(), path.clone()));
    path
}

fn fixture_dir() -> PathBuf {
    let dir = tmp_root().join("fixtures");
    std::fs::create_dir_all(&dir).expect("create fixture dir");
    dir
}

#[track_caller]
fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The `chronicle` binary of this workspace, built once per test run.
pub fn chronicle_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "chronicle-cli",
                "--bin",
                "chronicle",
                "--message-format=json",
            ])
            .current_dir(workspace())
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo build for the chronicle binary");
        assert!(out.status.success(), "building the chronicle binary failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find_map(|msg| {
                (msg["reason"] == "compiler-artifact" && msg["target"]["name"] == "chronicle")
                    .then(|| msg["executable"].as_str().map(PathBuf::from))
                    .flatten()
            })
            .expect("cargo reported the chronicle executable")
    })
}

/// Runs `chronicle ARGS`; returns its output (whatever the exit status).
pub fn chronicle(args: &[&str]) -> Output {
    Command::new(chronicle_bin())
        .args(args)
        .output()
        .expect("run chronicle")
}

/// Runs `chronicle ARGS` and requires success.
#[track_caller]
pub fn chronicle_ok(args: &[&str]) -> Output {
    let out = chronicle(args);
    assert!(
        out.status.success(),
        "chronicle {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A fixture process, killed when dropped.
pub struct Running {
    pub child: Child,
}

impl Running {
    /// Starts `program ARGS` and waits for its `ready <pid>` line.
    pub fn start(program: &Path, args: &[&str]) -> Running {
        let mut child = Command::new(program)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read ready line");
        assert!(
            line.starts_with("ready "),
            "fixture printed {line:?} instead of ready"
        );
        Running { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Exports every record of `function` from `db` as JSON.
#[track_caller]
pub fn export(db: &Path, function: &str) -> Vec<serde_json::Value> {
    let out = chronicle_ok(&[
        "export",
        function,
        "-o",
        "-",
        "--db",
        db.to_str().expect("utf-8 path"),
    ]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("export prints JSON");
    json.as_array().expect("export prints an array").clone()
}

/// The GNU build ID of a binary, from `readelf -n` (independent of Chronicle's own parser).
pub fn build_id(binary: &Path) -> String {
    let out = run_ok(Command::new("readelf").arg("-n").arg(binary));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: ").map(str::to_owned))
        .expect("binary has a build id")
}

/// A build of the orders service of `tests/fixtures/replay/` (the replay and test-generation
/// fixtures).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrdersVariant {
    /// `orders_v1`: what ran when the calls were captured.
    V1,
    /// `orders_v2`: a refactor with the same behaviour.
    V2,
    /// `orders_v2` with a more expensive express fee (C: `-DEXPRESS_FEE=650`, Rust:
    /// `--cfg changed`): `order_total` of express orders differs from v1.
    V2Changed,
    /// C only: `orders_v2` built with `-DCRASH_ON_EXPRESS` (`order_total` crashes on express
    /// orders).
    V2CrashOnExpress,
    /// C only: `orders_v2` built with `-DHANG_ON_EXPRESS` (`order_total` never returns on
    /// express orders).
    V2HangOnExpress,
}

impl OrdersVariant {
    /// Short name used in file names: `v1`, `v2`, `v2b`, `v2-crash`, `v2-hang`.
    pub fn name(self) -> &'static str {
        match self {
            OrdersVariant::V1 => "v1",
            OrdersVariant::V2 => "v2",
            OrdersVariant::V2Changed => "v2b",
            OrdersVariant::V2CrashOnExpress => "v2-crash",
            OrdersVariant::V2HangOnExpress => "v2-hang",
        }
    }

    fn source(self) -> &'static str {
        match self {
            OrdersVariant::V1 => "orders_v1",
            _ => "orders_v2",
        }
    }
}

/// A C build of the orders fixtures.
#[derive(Clone, Debug)]
pub struct OrdersC {
    /// The service (`orders_service.c` linked with the object): prints `ready <pid>`, then
    /// calls the orders functions in a loop; takes `--iterations N --interval-ms MS`.
    pub service: PathBuf,
    /// `orders_vX.o`, compiled with `-g -O2`: the functions alone, to link tests against.
    pub object: PathBuf,
}

/// Builds (once per test binary) the C orders library object and the service linked with it:
/// `gcc -g -O2 -c orders_vX.c -o X.o && gcc -g -O2 -o orders-c-X X.o orders_service.c`.
pub fn build_orders_c(variant: OrdersVariant) -> OrdersC {
    let dir = workspace().join("tests/fixtures/replay");
    let name = variant.name();
    let object = once(&format!("orders_c_object:{name}"), || {
        let out = fixture_dir().join(format!("orders-c-{name}.o"));
        let tmp = unique(&out);
        let define = match variant {
            OrdersVariant::V1 | OrdersVariant::V2 => None,
            OrdersVariant::V2Changed => Some("-DEXPRESS_FEE=650"),
            OrdersVariant::V2CrashOnExpress => Some("-DCRASH_ON_EXPRESS"),
            OrdersVariant::V2HangOnExpress => Some("-DHANG_ON_EXPRESS"),
        };
        run_ok(
            Command::new("gcc")
                // -fPIC: the replay tests also link the object into a shared library.
                .args(["-g", "-O2", "-fPIC", "-c"])
                .args(define)
                .arg(dir.join(format!("{}.c", variant.source())))
                .arg("-o")
                .arg(&tmp),
        );
        std::fs::rename(&tmp, &out).expect("move fixture into place");
        out
    });
    let service = once(&format!("orders_c_service:{name}"), || {
        let out = fixture_dir().join(format!("orders-c-{name}"));
        let tmp = unique(&out);
        run_ok(
            Command::new("gcc")
                .args(["-g", "-O2", "-o"])
                .arg(&tmp)
                .arg(&object)
                .arg(dir.join("orders_service.c")),
        );
        std::fs::rename(&tmp, &out).expect("move fixture into place");
        out
    });
    OrdersC { service, object }
}

/// The C orders functions of `variant` as a shared library (`liborders-c-X.so`).
pub fn build_orders_c_so(variant: OrdersVariant) -> PathBuf {
    let object = build_orders_c(variant).object;
    once(&format!("orders_c_so:{}", variant.name()), || {
        let out = fixture_dir().join(format!("liborders-c-{}.so", variant.name()));
        let tmp = unique(&out);
        run_ok(
            Command::new("gcc")
                .args(["-g", "-shared", "-o"])
                .arg(&tmp)
                .arg(&object),
        );
        std::fs::rename(&tmp, &out).expect("move fixture into place");
        out
    })
}

/// A Rust build of the orders fixtures.
#[derive(Clone, Debug)]
pub struct OrdersRust {
    /// The service (`orders_service.rs` linked with the rlib), as [`OrdersC::service`].
    pub service: PathBuf,
    /// `liborders-X.rlib` (crate `orders`), compiled with `-g -C opt-level=2`: pass it as
    /// `--extern orders=PATH` to compile tests against it.
    pub rlib: PathBuf,
}

/// Builds (once per test binary) the `orders` rlib and the Rust service linked with it.
/// Panics for the C-only variants.
pub fn build_orders_rust(variant: OrdersVariant) -> OrdersRust {
    let dir = workspace().join("tests/fixtures/replay");
    let name = variant.name();
    let cfg = match variant {
        OrdersVariant::V1 | OrdersVariant::V2 => None,
        OrdersVariant::V2Changed => Some(["--cfg", "changed"]),
        OrdersVariant::V2CrashOnExpress | OrdersVariant::V2HangOnExpress => {
            panic!("the Rust orders fixture has no {name} build")
        }
    };
    let rustc = || Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()));
    let common = ["--edition", "2024", "-g", "-C", "opt-level=2"];
    let rlib = once(&format!("orders_rust_rlib:{name}"), || {
        let out = fixture_dir().join(format!("liborders-{name}.rlib"));
        let tmp = unique(&out);
        run_ok(
            rustc()
                .args(common)
                .args(["--crate-type", "rlib", "--crate-name", "orders"])
                .args(cfg.iter().flatten())
                .arg("-o")
                .arg(&tmp)
                .arg(dir.join(format!("{}.rs", variant.source()))),
        );
        std::fs::rename(&tmp, &out).expect("move fixture into place");
        out
    });
    let service = once(&format!("orders_rust_service:{name}"), || {
        let out = fixture_dir().join(format!("orders-rs-{name}"));
        let tmp = unique(&out);
        run_ok(
            rustc()
                .args(common)
                .arg("--extern")
                .arg(format!("orders={}", rlib.display()))
                .arg("-o")
                .arg(&tmp)
                .arg(dir.join("orders_service.rs")),
        );
        std::fs::rename(&tmp, &out).expect("move fixture into place");
        out
    });
    OrdersRust { service, rlib }
}

/// A tmpfs of a given size mounted for one test (needs root), unmounted when dropped: a disk
/// that fills up, or a read-only file system.
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    pub fn mount(path: PathBuf, kib: u32) -> Tmpfs {
        std::fs::create_dir_all(&path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success(), "mount a tmpfs at {}", path.display());
        Tmpfs { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes the file system read-only from now on.
    pub fn remount_read_only(&self) {
        let status = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "remount {} read-only",
            self.path.display()
        );
    }

    /// Whether the file system has no room left for SQLite to grow its files: under
    /// 64 KiB (its shared-memory file grows 32 KiB at a time, so a write can be refused
    /// with more than a page free).
    pub fn full(&self) -> bool {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.path)
            .output()
            .unwrap();
        let avail: u64 = String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap();
        avail < 64 * 1024
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}
