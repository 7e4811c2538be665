//! Issue 10's bad-input matrix, for what `attach_cli.rs` does not already cover: each case
//! gets a message that says what to do, the contract's exit code (2 for input), and leaves
//! what a store already holds alone.

use std::path::{Path, PathBuf};
use std::process::Command;

use chronicle::storage::Storage;
use chronicle::storage::sqlite::SqliteStorage;
use chronicle::{CallRecord, Status, Value};
use chronicle_tests::{
    Opt, Running, Tmpfs, bpf_available, build_c, build_cpp, build_id, build_ledger, chronicle,
    chronicle_ok, export, scratch,
};
use serde_json::json;

/// A store at `dir/chronicle.db` holding one record of `kept(n=7) -> 49`.
fn store_with_a_record(dir: &Path) -> PathBuf {
    let db = dir.join("chronicle.db");
    let mut storage = SqliteStorage::open(&db).unwrap();
    storage
        .insert(&mut [CallRecord {
            id: None,
            function: "kept".into(),
            binary: "/bin/kept".into(),
            build_id: "ab".into(),
            pid: 1,
            tid: 1,
            timestamp: std::time::SystemTime::now(),
            duration_ns: Some(5),
            status: Status::Ok,
            args: vec![("n".into(), Value::Int(7))],
            ret: Some(Value::Int(49)),
            unavailable: Vec::new(),
            after: Vec::new(),
            dependencies: Vec::new(),
        }])
        .unwrap();
    db
}

/// The one record of [`store_with_a_record`] is still there.
#[track_caller]
fn assert_record_kept(db: &Path) {
    let records = export(db, "kept");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["args"], json!({"n": 7}));
    assert_eq!(records[0]["return"], json!(49));
}

/// Runs `chronicle ARGS`, expects exit code 2, returns stderr.
#[track_caller]
fn usage_error(args: &[&str]) -> String {
    let out = chronicle(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    stderr
}

/// `chronicle attach --pid P --func transfer --db DB` on a running `bank` (or a binary made
/// from it), which must be refused as bad input: its stderr.
fn capture_refused(bank: &Path, db: &Path) -> String {
    let service = Running::start(bank, &["--interval-ms", "20"]);
    let pid = service.pid().to_string();
    usage_error(&[
        "attach",
        "--pid",
        &pid,
        "--func",
        "transfer",
        "--duration",
        "0.5",
        "--db",
        db.to_str().unwrap(),
    ])
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A kernel thread's pid and name: kthreadd (pid 2) on any ordinary system, or the first
/// thread whose `/proc/PID/stat` has `PF_KTHREAD`.
fn kernel_thread() -> (u32, String) {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort();
    pids.into_iter()
        .find_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let after_name = &stat[stat.rfind(')')? + 2..];
            let flags: u64 = after_name.split(' ').nth(6)?.parse().ok()?;
            let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            (flags & PF_KTHREAD != 0).then(|| (pid, name.trim_end().to_owned()))
        })
        .expect("this system shows a kernel thread in /proc")
}

#[test]
fn a_kernel_thread_is_refused() {
    let name = "a_kernel_thread_is_refused";
    if !bpf_available(name) {
        return;
    }
    let dir = scratch(name);
    let db = store_with_a_record(&dir);
    let (pid, thread) = kernel_thread();
    let pid = pid.to_string();
    let stderr = usage_error(&[
        "attach",
        "--pid",
        &pid,
        "--func",
        "main",
        "--db",
        db.to_str().unwrap(),
    ]);
    assert_eq!(
        stderr,
        format!(
            "chronicle: pid {pid} ({thread}) is a kernel thread: it runs no program whose \
             functions could be traced; give the pid of a user-space process (`pgrep NAME`)\n"
        )
    );
    assert_record_kept(&db);
}

/// `chronicle attach --config FILE` with `text` in FILE; the store must not be touched.
fn attach_with_config(test: &str, text: &str) -> (String, PathBuf) {
    let dir = scratch(test);
    let db = store_with_a_record(&dir);
    let config = dir.join("chronicle.toml");
    std::fs::write(&config, text).unwrap();
    let stderr = usage_error(&[
        "attach",
        "--config",
        config.to_str().unwrap(),
        "--pid",
        "1",
        "--func",
        "main",
        "--db",
        db.to_str().unwrap(),
    ]);
    assert_record_kept(&db);
    (stderr, config)
}

#[test]
fn a_malformed_config_file_gives_line_column_and_key() {
    let (stderr, config) = attach_with_config(
        "a_malformed_config_file_gives_line_column_and_key",
        "# sampling\nsampling_rate = 0.5\nsampling_strategy = random\n",
    );
    assert_eq!(
        stderr,
        format!(
            "chronicle: {}, line 3, column 21, at key `sampling_strategy`: string values must \
             be quoted, expected literal string\n",
            config.display()
        )
    );
    let (stderr, config) = attach_with_config(
        "a_malformed_config_file_gives_line_column_and_key",
        "sampling_rate = 0.5\n\nretention_days = \"a week\"\n",
    );
    assert_eq!(
        stderr,
        format!(
            "chronicle: {}, line 3, column 1: retention_days: invalid type: string \"a week\", \
             expected u32\n",
            config.display()
        )
    );
}

#[test]
fn an_invalid_redaction_regex_names_the_pattern_and_the_error() {
    let (stderr, _) = attach_with_config(
        "an_invalid_redaction_regex_names_the_pattern_and_the_error",
        "redaction_patterns = ['order-\\d+', 'card-[0-9']\n",
    );
    assert_eq!(
        stderr,
        "chronicle: redaction_patterns: \"card-[0-9\" is not a valid regular expression; fix \
         or remove it:\n    card-[0-9\n         ^\nerror: unclosed character class\n"
    );
}

/// What every command that opens `db` says when it is not a chronicle store.
#[track_caller]
fn check_refused_unchanged(db: &Path, expect: &str) {
    let before = std::fs::read(db).unwrap();
    let db_arg = db.to_str().unwrap();
    for args in [
        &["export", "kept", "-o", "-", "--db", db_arg][..],
        &["query", "kept", "--db", db_arg][..],
        &["functions", "--db", db_arg][..],
    ] {
        let stderr = usage_error(args);
        assert_eq!(stderr, format!("chronicle: {expect}\n"), "{args:?}");
    }
    let stderr = capture_refused(&build_c("bank", Opt::O0), db);
    assert_eq!(stderr, format!("chronicle: {expect}\n"));
    assert_eq!(
        std::fs::read(db).unwrap(),
        before,
        "{} changed",
        db.display()
    );
    for side in ["-wal", "-shm", "-journal"] {
        let mut path = db.as_os_str().to_owned();
        path.push(side);
        assert!(!Path::new(&path).exists(), "{side} file left behind");
    }
}

#[test]
fn a_corrupt_or_foreign_database_is_refused_and_left_unchanged() {
    let name = "a_corrupt_or_foreign_database_is_refused_and_left_unchanged";
    if !bpf_available(name) {
        return;
    }
    let dir = scratch(name);
    // Not a database at all.
    let notes = dir.join("notes.db");
    std::fs::write(&notes, "meeting notes, not records\n".repeat(200)).unwrap();
    check_refused_unchanged(
        &notes,
        &format!(
            "{} is not a SQLite database; choose another path or move the file out of the way",
            notes.display()
        ),
    );
    // A chronicle store whose header was overwritten.
    let damaged = store_with_a_record(&dir);
    let mut bytes = std::fs::read(&damaged).unwrap();
    bytes[..16].copy_from_slice(b"not SQLite 3 \0\0\0");
    std::fs::write(&damaged, &bytes).unwrap();
    check_refused_unchanged(
        &damaged,
        &format!(
            "{} is not a SQLite database; choose another path or move the file out of the way",
            damaged.display()
        ),
    );
    // A chronicle store whose pages (not its header) are damaged: reading it fails, and a
    // capture is refused before it starts rather than losing its records at the first write.
    let pages = dir.join("pages");
    std::fs::create_dir_all(&pages).unwrap();
    let damaged = store_with_a_record(&pages);
    let mut bytes = std::fs::read(&damaged).unwrap();
    let page_size = usize::from(u16::from_be_bytes([bytes[16], bytes[17]]));
    assert!(bytes.len() > 2 * page_size, "{} bytes", bytes.len());
    bytes[page_size..].fill(0x5a);
    std::fs::write(&damaged, &bytes).unwrap();
    let db_arg = damaged.to_str().unwrap();
    let stderr = capture_refused(&build_c("bank", Opt::O0), &damaged);
    let expected_end = format!(
        "); nothing was written to it: restore a copy, recover it (`sqlite3 {db_arg} \
         .recover`), or choose another path\n"
    );
    // What SQLite's quick_check found, e.g. `Tree 5 page 5: btreeInitPage() returns error
    // code 11`.
    let detail = stderr
        .strip_prefix(&format!("chronicle: database {db_arg} is damaged ("))
        .and_then(|rest| rest.strip_suffix(&expected_end))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(detail.contains(" page "), "{detail}");
    let stderr = usage_error(&["functions", "--db", db_arg]);
    assert!(
        stderr.contains("database disk image is malformed"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&damaged).unwrap(), bytes);
    // Another program's SQLite database, even one with a `records` table.
    let app = dir.join("app.db");
    rusqlite::Connection::open(&app)
        .unwrap()
        .execute_batch(
            "CREATE TABLE records (id INTEGER PRIMARY KEY, note TEXT);
             CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);
             INSERT INTO users (name) VALUES ('alice');",
        )
        .unwrap();
    check_refused_unchanged(
        &app,
        &format!(
            "{} is a SQLite database of another program (tables: records, users), not a \
             chronicle store; it was left unchanged: choose another path",
            app.display()
        ),
    );
}

/// `mix(UINT64_MAX, -128, -32768, 255, true, 'Z')` of the bank: its first argument and its
/// result (32549) are plain 64-bit words in rdi and rax.
const MIX_BIG: u64 = u64::MAX;
const MIX_RESULT: u64 = 32549;

/// Attaches to `binary` (a bank) for half a second, tracing `mix`; returns stderr and the
/// records.
fn trace_mix(dir: &Path, binary: &Path) -> (String, Vec<serde_json::Value>) {
    let service = Running::start(binary, &["--interval-ms", "20"]);
    let pid = service.pid().to_string();
    let db = dir.join("chronicle.db");
    let out = chronicle_ok(&[
        "attach",
        "--pid",
        &pid,
        "--func",
        "mix",
        "--duration",
        "0.5",
        "--db",
        db.to_str().unwrap(),
    ]);
    let records = export(&db, "mix");
    assert!(!records.is_empty(), "a call every 20 ms");
    (String::from_utf8_lossy(&out.stderr).into_owned(), records)
}

#[test]
fn a_binary_without_debug_info_stores_raw_registers_with_a_warning() {
    let name = "a_binary_without_debug_info_stores_raw_registers_with_a_warning";
    if !bpf_available(name) {
        return;
    }
    let dir = scratch(name);
    let bank = dir.join("bank");
    run(
        "strip",
        &[
            "--strip-debug",
            "-o",
            bank.to_str().unwrap(),
            build_c("bank", Opt::O0).to_str().unwrap(),
        ],
    );
    let (stderr, records) = trace_mix(&dir, &bank);
    assert!(
        stderr.contains(&format!(
            "chronicle:   {} has no DWARF debug info (and no separate debug file was found): \
             the argument registers rdi, rsi, rdx, rcx, r8, r9 and rax at return are stored as \
             raw words; rebuild with -g, or put its debug file next to it, in its .debug \
             folder or under /usr/lib/debug/.build-id\n",
            bank.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("chronicle: tracing mix (no debug info) in "),
        "{stderr}"
    );
    let why = "no DWARF debug info: stored as raw registers (types unknown); rebuild with -g \
               or install the debug file";
    for r in &records {
        assert_eq!(r["args"]["rdi"], json!(MIX_BIG), "{r}");
        assert_eq!(r["return"], json!(MIX_RESULT), "{r}");
        assert_eq!(
            r["unavailable"],
            json!({"arguments": why, "return": why}),
            "{r}"
        );
        assert_eq!(r["replayable"], false, "{r}");
    }
}

#[test]
fn a_stripped_binary_without_its_debug_file_says_so() {
    let name = "a_stripped_binary_without_its_debug_file_says_so";
    if !bpf_available(name) {
        return;
    }
    let dir = scratch(name);
    let bank = dir.join("bank");
    run(
        "strip",
        &[
            "--strip-all",
            "-o",
            bank.to_str().unwrap(),
            build_c("bank", Opt::O0).to_str().unwrap(),
        ],
    );
    let service = Running::start(&bank, &["--interval-ms", "20"]);
    let pid = service.pid().to_string();
    let db = dir.join("chronicle.db");
    let stderr = usage_error(&[
        "attach",
        "--pid",
        &pid,
        "--func",
        "mix",
        "--db",
        db.to_str().unwrap(),
    ]);
    let expect = format!(
        "{} is stripped (it has no symbol table, and no debug file with one was found), so \
         only its exported functions can be traced: trace an unstripped build, or put its \
         debug file (objcopy --only-keep-debug) next to it",
        bank.display()
    );
    assert!(
        stderr.starts_with("chronicle: no function `mix` in ") && stderr.contains(&expect),
        "{stderr}"
    );
}

/// `binary` split as a distribution does: the debug info (and full symbol table) goes into
/// `debug`, the binary keeps neither.
fn split_debug_info(full: &Path, binary: &Path, debug: &Path, link: bool) {
    run(
        "objcopy",
        &[
            "--only-keep-debug",
            full.to_str().unwrap(),
            debug.to_str().unwrap(),
        ],
    );
    run(
        "strip",
        &[
            "--strip-all",
            "-o",
            binary.to_str().unwrap(),
            full.to_str().unwrap(),
        ],
    );
    if link {
        run(
            "objcopy",
            &[
                &format!("--add-gnu-debuglink={}", debug.display()),
                binary.to_str().unwrap(),
            ],
        );
    }
}

#[track_caller]
fn check_exact_mix(stderr: &str, records: &[serde_json::Value], debug: &Path) {
    assert!(
        stderr.contains(&format!(
            "chronicle:   debug info from {}\n",
            debug.display()
        )),
        "{stderr}"
    );
    for r in records {
        assert_eq!(
            r["args"],
            json!({"big": MIX_BIG, "tiny": -128, "small": -32768, "byte": 255, "flag": true,
                   "letter": "Z"}),
            "{r}"
        );
        assert_eq!(r["return"], json!(MIX_RESULT), "{r}");
        assert_eq!(r["replayable"], true, "{r}");
    }
}

#[test]
fn a_separate_debug_file_is_found_by_debuglink() {
    let name = "a_separate_debug_file_is_found_by_debuglink";
    if !bpf_available(name) {
        return;
    }
    let dir = scratch(name);
    // In the binary's `.debug` folder, as `--add-gnu-debuglink` names it.
    std::fs::create_dir_all(dir.join(".debug")).unwrap();
    let bank = dir.join("bank");
    let staged = dir.join("bank.debug");
    split_debug_info(&build_c("bank", Opt::O0), &bank, &staged, true);
    let debug = dir.join(".debug/bank.debug");
    std::fs::rename(&staged, &debug).unwrap();
    let (stderr, records) = trace_mix(&dir, &bank);
    check_exact_mix(&stderr, &records, &debug);
}

/// Removes a file when dropped (a debug file put under /usr/lib/debug for one test).
struct Removed(PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn a_separate_debug_file_is_found_by_build_id() {
    let name = "a_separate_debug_file_is_found_by_build_id";
    if !bpf_available(name) {
        return;
    }
    let dir = scratch(name);
    // A build ID of its own, so that no other test's bank finds this debug file.
    let full = dir.join("bank-full");
    run(
        "cc",
        &[
            "-g",
            "-O0",
            "-pthread",
            "-Wl,--build-id=0x6368726f6e69636c652062616420696e70757421",
            "-o",
            full.to_str().unwrap(),
            chronicle_tests::workspace()
                .join("tests/fixtures/bank.c")
                .to_str()
                .unwrap(),
        ],
    );
    let id = build_id(&full);
    let debug = PathBuf::from(format!(
        "/usr/lib/debug/.build-id/{}/{}.debug",
        &id[..2],
        &id[2..]
    ));
    std::fs::create_dir_all(debug.parent().unwrap()).unwrap();
    let _cleanup = Removed(debug.clone());
    let bank = dir.join("bank");
    split_debug_info(&full, &bank, &debug, false);
    let (stderr, records) = trace_mix(&dir, &bank);
    check_exact_mix(&stderr, &records, &debug);
    for r in &records {
        assert_eq!(r["build_id"], id, "{r}");
    }
}

#[test]
fn an_ambiguous_function_lists_every_candidate() {
    let name = "an_ambiguous_function_lists_every_candidate";
    if !bpf_available(name) {
        return;
    }
    let dir = scratch(name);
    let store = build_cpp("store", Opt::O0);
    let service = Running::start(&store, &["--interval-ms", "50"]);
    let pid = service.pid().to_string();
    let db = store_with_a_record(&dir);
    let stderr = usage_error(&[
        "attach",
        "--pid",
        &pid,
        "--func",
        "area",
        "--db",
        db.to_str().unwrap(),
    ]);
    assert_eq!(
        stderr,
        "chronicle: `area` matches 2 functions: store::area(int, int), \
         store::area(store::Point const&); pass a longer path or the mangled name, or \
         FILE:NAME for the one in FILE\n"
    );
    assert_record_kept(&db);
}

#[test]
fn file_colon_name_picks_the_object() {
    let name = "file_colon_name_picks_the_object";
    if !bpf_available(name) {
        return;
    }
    let dir = scratch(name);
    let (app, lib) = build_ledger();
    let service = Running::start(&app, &[]);
    let pid = service.pid().to_string();
    let db = dir.join("chronicle.db");
    chronicle_ok(&[
        "attach",
        "--pid",
        &pid,
        "--func",
        "libledger.so:ledger_post",
        "--duration",
        "0.3",
        "--db",
        db.to_str().unwrap(),
    ]);
    let records = export(&db, "ledger_post");
    assert!(!records.is_empty());
    assert_eq!(records[0]["binary"], lib.to_str().unwrap());
    assert_eq!(
        records[0]["args"],
        json!({"account": "savings", "cents": -42})
    );
    // A file the process does not map has no functions.
    let stderr = usage_error(&[
        "attach",
        "--pid",
        &pid,
        "--func",
        "libnowhere.so:ledger_post",
        "--db",
        db.to_str().unwrap(),
    ]);
    assert!(
        stderr.starts_with("chronicle: no function `libnowhere.so:ledger_post` in "),
        "{stderr}"
    );
}

#[test]
fn a_binary_rebuilt_on_disk_is_traced_as_it_runs() {
    let name = "a_binary_rebuilt_on_disk_is_traced_as_it_runs";
    if !bpf_available(name) {
        return;
    }
    let dir = scratch(name);
    let bank = dir.join("bank");
    let original = build_c("bank", Opt::O0);
    // Copies by `cp`: a file this process has open for writing could be inherited by a child
    // another test forks meanwhile, and starting it would fail with ETXTBSY.
    run("cp", &[original.to_str().unwrap(), bank.to_str().unwrap()]);
    let service = Running::start(&bank, &["--interval-ms", "20"]);
    // A rebuild replaces the file (a linker writes a new one and renames it over the old):
    // the process still runs the old build.
    let rebuilt = dir.join("bank.new");
    let o2 = build_c("bank", Opt::O2);
    run("cp", &[o2.to_str().unwrap(), rebuilt.to_str().unwrap()]);
    std::fs::rename(&rebuilt, &bank).unwrap();
    assert_ne!(build_id(&bank), build_id(&original));
    let pid = service.pid().to_string();
    let db = dir.join("chronicle.db");
    let out = chronicle_ok(&[
        "attach",
        "--pid",
        &pid,
        "--func",
        "mix",
        "--duration",
        "0.5",
        "--db",
        db.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "chronicle:   {} was replaced on disk after the process started it: tracing the \
             build that runs ({})",
            bank.display(),
            &build_id(&original)[..12]
        )),
        "{stderr}"
    );
    let records = export(&db, "mix");
    assert!(!records.is_empty());
    for r in &records {
        assert_eq!(r["build_id"], build_id(&original), "{r}");
        assert_eq!(r["args"]["big"], json!(MIX_BIG), "{r}");
        assert_eq!(r["return"], json!(MIX_RESULT), "{r}");
    }
}

#[test]
fn two_attaches_on_one_process_both_record_exact_values() {
    let name = "two_attaches_on_one_process_both_record_exact_values";
    if !bpf_available(name) {
        return;
    }
    let dir = scratch(name);
    let bank = build_c("bank", Opt::O0);
    let mut service = Running::start(&bank, &["--interval-ms", "10"]);
    let pid = service.pid().to_string();
    // Each agent has its own probes, maps and ring buffer; the kernel runs both on every call.
    let attach = |db: &Path, secs: &str| {
        Command::new(chronicle_tests::chronicle_bin())
            .args([
                "attach", "--pid", &pid, "--func", "transfer", "--func", "mix",
            ])
            .args(["--duration", secs, "--db"])
            .arg(db)
            .output()
            .unwrap()
    };
    let (first, second) = (dir.join("first.db"), dir.join("second.db"));
    let outputs = std::thread::scope(|s| {
        let a = s.spawn(|| attach(&first, "1.5"));
        std::thread::sleep(std::time::Duration::from_millis(300));
        let b = s.spawn(|| attach(&second, "0.6"));
        [a.join().unwrap(), b.join().unwrap()]
    });
    for out in &outputs {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for db in [&first, &second] {
        let transfers = export(db, "transfer");
        assert!(
            transfers.len() >= 4 * 10,
            "{}: {}",
            db.display(),
            transfers.len()
        );
        for r in &transfers {
            let expected = match r["args"]["cents"].as_i64().unwrap() {
                1250 => json!({"from": "alice", "to": "bob", "cents": 1250}),
                -500 => json!({"from": "carol", "to": "dave", "cents": -500}),
                1 => json!({"from": null, "to": "frank", "cents": 1}),
                i64::MAX => r["args"].clone(),
                other => panic!("unexpected cents {other}: {r}"),
            };
            assert_eq!(r["args"], expected, "{r}");
            assert_eq!(r["status"], "ok", "{r}");
        }
        for r in &export(db, "mix") {
            assert_eq!(r["args"]["big"], json!(MIX_BIG), "{r}");
            assert_eq!(r["return"], json!(MIX_RESULT), "{r}");
        }
    }
    // The program ran on through both and after them.
    assert!(service.child.try_wait().unwrap().is_none(), "the bank died");
}

#[test]
fn a_go_program_is_refused_before_any_probe() {
    let name = "a_go_program_is_refused_before_any_probe";
    if !bpf_available(name) {
        return;
    }
    // No Go toolchain here: a C program with the section the Go linker writes into every
    // binary is enough for the check, which reads only that.
    let dir = scratch(name);
    let info = dir.join("buildinfo");
    std::fs::write(&info, b"\xff Go buildinf:\x08\x02").unwrap();
    let bank = dir.join("bank");
    run(
        "objcopy",
        &[
            &format!("--add-section=.go.buildinfo={}", info.display()),
            build_c("bank", Opt::O0).to_str().unwrap(),
            bank.to_str().unwrap(),
        ],
    );
    let db = store_with_a_record(&dir);
    let stderr = capture_refused(&bank, &db);
    assert_eq!(
        stderr,
        format!(
            "chronicle: `transfer` is in {}, a Go program: a return probe would crash it (Go \
             moves goroutine stacks, and the kernel's return trampoline breaks that), and \
             Chronicle cannot trace Go yet; trace a C, C++ or Rust function instead\n",
            bank.display()
        )
    );
    assert_record_kept(&db);
}

/// `attach` under a seccomp filter that makes `bpf(2)` (or, with `--no-uprobes`,
/// `perf_event_open(2)`) fail with ENOSYS, as on a kernel built without them: exit 3 with a
/// message that names what is missing and the way out; a store already there is kept.
#[test]
fn a_kernel_without_bpf_or_uprobes_says_what_it_lacks() {
    let name = "a_kernel_without_bpf_or_uprobes";
    if !bpf_available(name) {
        return;
    }
    let dir = scratch(name);
    let nobpf = build_c("nobpf", Opt::O2);
    let bank = build_c("bank", Opt::O0);
    let service = Running::start(&bank, &["--interval-ms", "5"]);
    let pid = service.pid().to_string();
    let db = store_with_a_record(&dir);
    for (flags, expect) in [
        (
            &[][..],
            "chronicle: this kernel has no BPF (the bpf system call is not implemented): \
             Chronicle needs Linux 5.15+ built with CONFIG_BPF_SYSCALL and \
             CONFIG_UPROBE_EVENTS; where that cannot be had, Rust code can record itself with \
             #[capture]: ",
        ),
        (
            &["--no-uprobes"][..],
            "chronicle: this kernel cannot place uprobes (perf_event_open for a uprobe is not \
             implemented): Chronicle needs a kernel built with CONFIG_UPROBE_EVENTS; where that \
             cannot be had, Rust code can record itself with #[capture]: ",
        ),
    ] {
        let out = Command::new(&nobpf)
            .args(flags)
            .arg(chronicle_tests::chronicle_bin())
            .args(["attach", "--pid", &pid, "--func", "transfer", "--db"])
            .arg(&db)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{stderr}");
        assert!(stderr.starts_with(expect), "{stderr}");
        assert!(
            stderr.ends_with("Function not implemented (os error 38)\n"),
            "{stderr}"
        );
    }
    assert_record_kept(&db);
}

/// A store on a read-only file system: readers read it as it is; a capture into it, or into a
/// new file beside it, is refused before it starts, saying what to do. A store that cannot be
/// read whole that way (calls still in its write-ahead log, an older schema that would need
/// upgrading) is refused rather than read without them.
#[test]
fn a_store_on_a_read_only_file_system_is_read_never_written() {
    let name = "read_only_store";
    let dir = scratch(name);
    let disk = Tmpfs::mount(dir.join("ro"), 4 * 1024);
    let db = store_with_a_record(disk.path());
    let old = store_with_a_record(&make_dir(disk.path().join("old")));
    rusqlite::Connection::open(&old)
        .unwrap()
        .execute_batch(
            "DROP TRIGGER records_summary_delete; DROP TABLE function_totals; \
             DROP TABLE function_builds; PRAGMA user_version = 5;",
        )
        .unwrap();
    // A copy taken while a writer still had calls in the log.
    let logged = make_dir(disk.path().join("logged")).join("chronicle.db");
    {
        let source = store_with_a_record(&make_dir(dir.join("writer")));
        let writer = rusqlite::Connection::open(&source).unwrap();
        writer
            .execute_batch(
                "PRAGMA wal_autocheckpoint = 0; \
                 INSERT INTO records (function, binary, build_id, pid, tid, timestamp_ns, \
                 duration_ns, status, args, ret, unavailable, replayable) \
                 VALUES ('kept', '/bin/kept', 'ab', 1, 1, 1, 5, 'ok', '[]', NULL, '[]', 1);",
            )
            .unwrap();
        for suffix in ["", "-wal"] {
            std::fs::copy(
                format!("{}{suffix}", source.display()),
                format!("{}{suffix}", logged.display()),
            )
            .unwrap();
        }
    }
    disk.remount_read_only();

    assert_record_kept(&db);
    let listed = chronicle_ok(&["functions", "--db", db.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("\nkept "));
    let stderr = usage_error(&["functions", "--db", old.to_str().unwrap()]);
    assert_eq!(
        stderr,
        format!(
            "chronicle: database {} is read-only and has schema version 5; this chronicle \
             reads version 6: copy it somewhere writable and read the copy (that upgrades it)\n",
            old.display()
        )
    );
    let stderr = usage_error(&["functions", "--db", logged.to_str().unwrap()]);
    assert_eq!(
        stderr,
        format!(
            "chronicle: database {0} is on a read-only file system with calls still in its \
             write-ahead log ({0}-wal); copy both files somewhere writable and read the copy\n",
            logged.display()
        )
    );

    if !bpf_available(name) {
        return;
    }
    let bank = build_c("bank", Opt::O0);
    let new = disk.path().join("new.db");
    for target in [&db, &new] {
        let stderr = capture_refused(&bank, target);
        assert_eq!(
            stderr,
            format!(
                "chronicle: database {} cannot be written (Read-only file system (os error \
                 30)); choose a --db path on a writable file system, where this user may write\n",
                target.display()
            )
        );
    }
    assert!(!new.exists());
    assert_record_kept(&db);
}

fn make_dir(path: PathBuf) -> PathBuf {
    std::fs::create_dir_all(&path).unwrap();
    path
}
