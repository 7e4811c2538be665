//! Faults: the agent stopped by a signal while the target calls as fast as it can, the agent
//! killed outright, and the traced program's behaviour with and without Chronicle.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

use chronicle_tests::{
    Opt, Running, Tmpfs, bpf_available, build_c, chronicle_bin, chronicle_ok, export, scratch,
};
use serde_json::json;

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

const SIGKILL: i32 = 9;
const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;
const SIGUSR1: i32 = 10;

fn signal(child: &Child, signal: i32) {
    // SAFETY: kill has no memory preconditions; the child has not been waited for, so its
    // pid is still its own.
    assert_eq!(unsafe { libc_kill(child.id() as i32, signal) }, 0);
}

/// Waits for `child` to exit, at most `limit`.
fn wait_at_most(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("{what} did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `chronicle attach --pid PID --func score --db DB`, once its probes are in place.
fn attach_score(pid: u32, db: &Path) -> (Child, BufReader<ChildStderr>) {
    // The program must have been exec'd: a forked child has nothing to probe yet.
    let started = Instant::now();
    while !std::fs::read_link(format!("/proc/{pid}/exe"))
        .is_ok_and(|exe| exe.to_string_lossy().contains("hot-O0"))
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "hot never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    attach_traced(&["--pid", &pid.to_string(), "--func", "score"], db)
}

/// `chronicle attach ARGS --progress 0 --db DB`, once it says it is tracing (its probes
/// are in place); the rest of its stderr is left to read.
fn attach_traced(args: &[&str], db: &Path) -> (Child, BufReader<ChildStderr>) {
    let mut attach = Command::new(chronicle_bin())
        .arg("attach")
        .args(args)
        .args(["--progress", "0", "--db"])
        .arg(db)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(attach.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.starts_with("chronicle: tracing "), "{line}");
    (attach, stderr)
}

/// What `score(i, 3, 1999, "SKU-4242")` returns in `hot.c`.
fn score(i: i64) -> i64 {
    i * 7 + 3 * 1999 + i64::from(b'S')
}

/// Checks one stored `score` call: its arguments and, when it returned, its result.
fn check_score_record(r: &serde_json::Value) -> i64 {
    let i = r["args"]["id"].as_i64().unwrap_or_else(|| panic!("{r}"));
    assert_eq!(
        r["args"],
        json!({"id": i, "qty": 3, "cents": 1999, "sku": "SKU-4242"}),
        "{r}"
    );
    match r["status"].as_str().unwrap() {
        "ok" => assert_eq!(r["return"], json!(score(i)), "{r}"),
        "unwound" => {
            let reason = r["unavailable"]["return"].as_str().unwrap();
            assert!(
                reason == "tracing stopped while the call was running"
                    || reason.contains("return event was dropped"),
                "{r}"
            );
        }
        other => panic!("status {other}: {r}"),
    }
    i
}

/// N of the summary's "...; N records written to STORE".
fn written_count(stderr: &str) -> u64 {
    stderr
        .split_once(" records written to ")
        .and_then(|(before, _)| before.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no written count: {stderr}"))
}

/// The summary row of `function`: calls, stored, sampled out, unwound, dropped, fetch errors.
fn summary_row(stderr: &str, function: &str) -> Vec<u64> {
    let row: Vec<u64> = stderr
        .lines()
        .find(|l| l.starts_with(&format!("{function} ")))
        .unwrap_or_else(|| panic!("no summary row for {function}: {stderr}"))
        .split_whitespace()
        .skip(1)
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(row.len(), 6, "{stderr}");
    row
}

/// SIGINT or SIGTERM while the target calls the traced function as fast as the probes let
/// it: the agent stops promptly (it used to drain the ring buffer until the target exited),
/// stores every record it built, counts every call it lost, and the target goes on unharmed.
fn stop_at_full_rate(name: &str, sig: i32) {
    if !bpf_available(name) {
        return;
    }
    let dir = scratch(name);
    let hot = build_c("hot", Opt::O0);
    let calls: i64 = 400_000_000;
    let mut program = Command::new(&hot)
        .args([&calls.to_string(), "score"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let db = dir.join("chronicle.db");
    let (mut attach, mut stderr) = attach_score(program.id(), &db);
    std::thread::sleep(Duration::from_millis(1500));
    signal(&attach, sig);
    let status = wait_at_most(&mut attach, Duration::from_secs(60), "chronicle attach");
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert!(status.success(), "{rest}");
    assert!(rest.contains("(interrupted)"), "{rest}");

    let written = written_count(&rest);
    let [counted, stored, sampled_out, unwound, dropped, fetch_errors] =
        summary_row(&rest, "score")[..]
    else {
        unreachable!()
    };
    assert_eq!((sampled_out, fetch_errors), (0, 0), "{rest}");
    assert_eq!(stored, written, "{rest}");
    // At full rate the ring buffer fills. Every call is accounted for: one whose entry did not
    // fit is a dropped event (its return stays silent); one whose return did not fit is a
    // dropped event and a record stored as unwound; the call running when tracing stopped
    // returned while tracing closed and is stored whole.
    assert!(dropped > 0, "{rest}");
    let open_at_stop = (counted - stored + unwound)
        .checked_sub(dropped)
        .unwrap_or_else(|| panic!("more drops than lost calls: {rest}"));
    assert_eq!(open_at_stop, 0, "{rest}");

    let records = export(&db, "score");
    assert_eq!(records.len() as u64, written);
    let mut previous = -1;
    for r in &records {
        let i = check_score_record(r);
        assert!(
            i > previous,
            "calls stored out of order: {i} after {previous}"
        );
        previous = i;
    }

    // The probes are gone and the program finishes with the right result.
    let mut out = String::new();
    program
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(program.wait().unwrap().success());
    let sink: i64 = (0..calls).map(score).sum();
    assert!(out.ends_with(&format!(" sink {sink}\n")), "{out}");
}

#[test]
fn sigint_at_full_rate_stores_every_record_and_counts_every_loss() {
    stop_at_full_rate("sigint_at_full_rate", SIGINT);
}

#[test]
fn sigterm_at_full_rate_stores_every_record_and_counts_every_loss() {
    stop_at_full_rate("sigterm_at_full_rate", SIGTERM);
}

/// When tracing stops, calls already running get a moment to return: `settle` (40 ms, called
/// back to back, so one is running at the stop) is stored whole, every call in order and none
/// unwound; `hang`, which sleeps for a minute, is stored as unwound with its arguments and the
/// reason. Calls that start while tracing closes are not counted.
#[test]
fn calls_running_when_tracing_stops_return_or_are_marked_unwound() {
    let name = "calls_running_at_stop";
    if !bpf_available(name) {
        return;
    }
    let dir = scratch(name);
    let inflight = build_c("inflight", Opt::O0);
    let service = Running::start(&inflight, &[]);
    let pid = service.pid().to_string();
    let db = dir.join("chronicle.db");
    let args = [
        "--pid",
        &pid,
        "--duration",
        "1.5",
        "--func",
        "settle",
        "--func",
        "hang",
    ];
    let (mut attach, mut stderr) = attach_traced(&args, &db);
    // SAFETY: kill has no memory preconditions; `service` owns the pid until it is dropped.
    assert_eq!(unsafe { libc_kill(service.pid() as i32, SIGUSR1) }, 0);
    let status = wait_at_most(&mut attach, Duration::from_secs(30), "chronicle attach");
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert!(status.success(), "{rest}");

    let settled = export(&db, "settle");
    assert!(
        settled.len() >= 10,
        "{} settle calls: {rest}",
        settled.len()
    );
    let first = settled[0]["args"]["id"].as_i64().unwrap();
    for (n, r) in settled.iter().enumerate() {
        let id = first + n as i64;
        let got = [&r["args"], &r["return"], &r["status"]];
        assert_eq!(
            got,
            [&json!({"id": id}), &json!(id * 3 + 1), &json!("ok")],
            "{r}"
        );
    }
    // calls, stored, sampled out, unwound, dropped, fetch errors
    let n = settled.len() as u64;
    assert_eq!(summary_row(&rest, "settle"), [n, n, 0, 0, 0, 0], "{rest}");

    let hung = export(&db, "hang");
    assert_eq!(hung.len(), 1, "{hung:#?}");
    let r = &hung[0];
    let got = [
        &r["args"],
        &r["return"],
        &r["status"],
        &r["unavailable"]["return"],
    ];
    let reason = json!("tracing stopped while the call was running");
    assert_eq!(
        got,
        [&json!({"id": 7}), &json!(null), &json!("unwound"), &reason],
        "{r}"
    );
    assert_eq!(summary_row(&rest, "hang"), [1, 1, 0, 1, 0, 0], "{rest}");
}

/// The first byte of `function` in the running process `pid` (0xCC while a uprobe is there).
fn first_byte(pid: u32, binary: &Path, function: &str) -> u8 {
    let nm = Command::new("nm").arg(binary).output().unwrap();
    let symbol = String::from_utf8_lossy(&nm.stdout)
        .lines()
        .find_map(|l| {
            let mut parts = l.split_whitespace();
            let (value, kind, name) = (parts.next()?, parts.next()?, parts.next()?);
            (kind == "T" && name == function).then(|| u64::from_str_radix(value, 16).unwrap())
        })
        .unwrap_or_else(|| panic!("no {function} in nm {}", binary.display()));
    // A PIE executable: its first mapping (file offset 0) is where address 0 of the file is.
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let path = binary.canonicalize().unwrap();
    let base = maps
        .lines()
        .find(|l| {
            l.ends_with(path.to_str().unwrap()) && l.split_whitespace().nth(2) == Some("00000000")
        })
        .and_then(|l| l.split('-').next())
        .map(|start| u64::from_str_radix(start, 16).unwrap())
        .unwrap_or_else(|| panic!("{} not mapped in {maps}", path.display()));
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut byte = [0u8];
    std::os::unix::fs::FileExt::read_exact_at(&mem, &mut byte, base + symbol).unwrap();
    byte[0]
}

/// Rows in the store so far (0 before it exists), read beside the writer.
fn stored_rows(db: &Path) -> i64 {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| c.query_row("SELECT COUNT(*) FROM records", [], |row| row.get(0)))
        .unwrap_or(0)
}

/// SIGKILL of the agent mid-trace: the store is intact and holds an unbroken run of calls
/// (only the batch in flight is missing), and the kernel removed the probes with the agent.
#[test]
fn sigkill_leaves_a_sound_store_and_no_probes() {
    let name = "sigkill_leaves_a_sound_store";
    if !bpf_available(name) {
        return;
    }
    let dir = scratch(name);
    let hot = build_c("hot", Opt::O0);
    // 20 000 calls a second: a rate the agent keeps up with, so every call up to the kill
    // is stored but the last batch.
    let mut program = Command::new(&hot)
        .args(["1000000000", "score", "20000"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let original = first_byte(program.id(), &hot, "score");
    assert_ne!(original, 0xCC);
    let db = dir.join("chronicle.db");
    let (mut attach, _stderr) = attach_score(program.id(), &db);
    assert_eq!(
        first_byte(program.id(), &hot, "score"),
        0xCC,
        "probe in place"
    );
    // Killed once a few batches are in the store, while more are on their way.
    let started = Instant::now();
    while stored_rows(&db) < 3 * 4096 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "nothing stored"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(&attach, SIGKILL);
    attach.wait().unwrap();
    // The links die with the agent's descriptors; the breakpoint goes with the last one.
    let started = Instant::now();
    while first_byte(program.id(), &hot, "score") == 0xCC {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the uprobe outlived the agent"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(first_byte(program.id(), &hot, "score"), original);
    assert!(
        program.try_wait().unwrap().is_none(),
        "the program kept running"
    );
    let _ = program.kill();
    let _ = program.wait();

    chronicle_ok(&[
        "query",
        "--db",
        db.to_str().unwrap(),
        "score",
        "--limit",
        "1",
    ]);
    // What the agent held in memory is gone (the batch being written, the queue to the
    // writer, unread events); what it committed is all there, without a gap.
    let (_, stored) = check_unbroken(&db);
    assert!(stored >= 3 * 4096, "{stored} records");
}

/// The traced program's output and exit status are byte for byte what they are untraced,
/// with output parameters read back (`--after`), a struct returned by value, a buffer
/// rewritten in place, recursion, and the syscall tracepoints on.
#[test]
fn the_traced_program_behaves_exactly_as_untraced() {
    let name = "the_traced_program_behaves_exactly_as_untraced";
    if !bpf_available(name) {
        return;
    }
    let dir = scratch(name);
    for opt in [Opt::O0, Opt::O2] {
        let steady = build_c("steady", opt);
        let plain = Command::new(&steady).arg("100").output().unwrap();
        assert!(plain.stdout.len() > 2_000 && plain.status.code().is_some());
        let db = dir.join(format!("{opt:?}.db"));
        let traced = Command::new(chronicle_bin())
            .args(["attach", "--progress", "0", "--after", "--track-file-io"])
            .args(["--func", "sum_and_product", "--func", "shout"])
            .args(["--func", "split_cents", "--func", "fib", "--db"])
            .arg(&db)
            .arg("--")
            .arg(&steady)
            .arg("100")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&traced.stderr);
        assert!(
            stderr.contains(&format!(
                "(program exited with status {})",
                plain.status.code().unwrap()
            )),
            "{stderr}"
        );
        assert!(plain.stdout == traced.stdout, "{opt:?}: output differs");
        for function in ["sum_and_product", "shout", "split_cents", "fib"] {
            assert_eq!(summary_row(&stderr, function)[4], 0, "dropped: {stderr}");
        }
        // And it was traced, exactly.
        let calls = export(&db, "sum_and_product");
        assert_eq!(calls.len(), 100, "{stderr}");
        assert_eq!(calls[2]["return"], json!(2), "{}", calls[2]);
        assert_eq!(
            calls[2]["after"]["sum"],
            json!(3 + 8 + 7 + 3),
            "{}",
            calls[2]
        );
        let shouted = export(&db, "shout");
        assert_eq!(
            shouted[7]["after"]["text"],
            json!("ORDER-7 OK"),
            "{}",
            shouted[7]
        );
        assert_eq!(shouted[7]["return"], json!(10), "{}", shouted[7]);
    }
}

/// Traces `hot CALLS score 10000` (10 000 calls a second) into `store` (`--db PATH` or
/// `--dsn DSN`), calling `meanwhile` while it runs; returns the exit code and stderr.
fn trace_hot_into(store: [&str; 2], calls: u32, meanwhile: impl FnOnce()) -> (Option<i32>, String) {
    let hot = build_c("hot", Opt::O0);
    let mut attach = Command::new(chronicle_bin())
        .args(["attach", "--progress", "0", "--func", "score"])
        .args(store)
        .arg("--")
        .arg(&hot)
        .args([&calls.to_string(), "score", "10000"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = attach.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).unwrap();
        text
    });
    meanwhile();
    let status = wait_at_most(&mut attach, Duration::from_secs(120), "chronicle attach");
    (status.code(), reader.join().unwrap())
}

/// The store passes `PRAGMA integrity_check`, and every stored call is exact and follows the
/// one before: returns the first call's `id` argument and how many calls are stored.
fn check_unbroken(db: &Path) -> (i64, u64) {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let records = export(db, "score");
    let first = records.first().map_or(0, check_score_record);
    for (k, r) in records.iter().enumerate() {
        assert_eq!(check_score_record(r), first + k as i64, "a gap before {r}");
    }
    (first, records.len() as u64)
}

/// The disk fills while tracing and frees up again: the refused batches wait in memory and
/// every call is stored once there is room.
#[test]
fn a_disk_that_fills_and_frees_up_loses_nothing() {
    let name = "a_disk_that_fills_and_frees_up";
    if !bpf_available(name) {
        return;
    }
    let dir = scratch(name);
    // 1.5 MiB of room at first: a few batches of ~1 000 records. Once the filler goes there
    // must be room for the whole store and its log at their largest: 20 000 calls made a
    // 10.4 MB store whose log had reached 5.2 MB before its last checkpoint (a 16 MiB disk
    // filled up for real at the end when CI was busy).
    let disk = Tmpfs::mount(dir.join("disk"), 32 * 1024);
    let filler = disk.path().join("filler");
    std::fs::write(&filler, vec![7u8; 30 * 1024 * 1024 + 512 * 1024]).unwrap();
    let db = disk.path().join("chronicle.db");
    let started = Instant::now();
    let mut freed = Duration::ZERO;
    let (code, stderr) = trace_hot_into(["--db", db.to_str().unwrap()], 20_000, || {
        while !disk.full() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the disk never filled"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // Let a few batches be refused, then make room.
        std::thread::sleep(Duration::from_millis(500));
        std::fs::remove_file(&filler).unwrap();
        freed = started.elapsed();
    });
    // The agent keeps refused batches for 10 s after the program ends (2 s).
    assert_eq!(code, Some(0), "room made after {freed:?}: {stderr}");
    let retried = stderr
        .split_once("chronicle: the store refused ")
        .and_then(|(_, rest)| rest.split(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no refused writes reported: {stderr}"));
    assert!(retried > 0);
    assert!(stderr.contains("; 20000 records written to "), "{stderr}");
    assert_eq!(check_unbroken(&db), (0, 20_000));
}

/// The disk stays full: refused records wait in memory (up to the bound; the unit tests in
/// `writer.rs` cover what does not fit) and are tried again until the end; what is still
/// waiting then is lost and counted, the exit status says so, and what was stored is intact.
#[test]
fn a_disk_that_stays_full_loses_what_waits_at_the_end_and_says_so() {
    let name = "a_disk_that_stays_full";
    if !bpf_available(name) {
        return;
    }
    let dir = scratch(name);
    // Room for a batch or two: the rest wait in memory until the end, and are lost then.
    let disk = Tmpfs::mount(dir.join("disk"), 3 * 1024);
    let db = disk.path().join("chronicle.db");
    let (code, stderr) = trace_hot_into(["--db", db.to_str().unwrap()], 20_000, || {});
    assert_eq!(code, Some(3), "{stderr}");
    let written = written_count(&stderr);
    let lost = 20_000 - written;
    assert!(
        stderr.contains(&format!(
            "{lost} of 20000 records could not be stored in {}",
            db.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("database or disk is full"), "{stderr}");
    assert!(written > 0 && lost > 0, "{stderr}");
    assert_eq!(check_unbroken(&db), (0, written));
}

/// A PostgreSQL server of this test's own (initdb in a scratch directory, on a free port), so
/// that it can be stopped and started under a running agent.
struct PrivatePostgres {
    bin: std::path::PathBuf,
    data: std::path::PathBuf,
    port: u16,
}

impl PrivatePostgres {
    /// `None` (said on stderr) where PostgreSQL is not installed, unless the environment
    /// requires it (`CHRONICLE_REQUIRE_PG=1` or `CI`), as for the other PostgreSQL tests.
    fn start(test: &str) -> Option<PrivatePostgres> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|versions| {
                versions
                    .filter_map(Result::ok)
                    .map(|v| v.path().join("bin"))
                    .max()
            })
            .filter(|bin| bin.join("initdb").exists());
        let Some(bin) = bin else {
            let required = std::env::var("CHRONICLE_REQUIRE_PG").as_deref() == Ok("1")
                || std::env::var_os("CI").is_some_and(|ci| !ci.is_empty());
            assert!(
                !required,
                "{test} needs PostgreSQL's server binaries (apt-get install postgresql)"
            );
            eprintln!("NOT RUN: {test} needs PostgreSQL's server binaries");
            return None;
        };
        // Under /tmp: the postgres user must reach it, and the checkout may sit in a
        // directory only root can enter (a CI clone made by `mktemp -d`).
        let port = free_port();
        let data = std::env::temp_dir().join(format!("chronicle-pg-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data).unwrap();
        let server = PrivatePostgres { bin, data, port };
        let chown = Command::new("chown")
            .args(["-R", "postgres"])
            .arg(&server.data)
            .status()
            .unwrap();
        assert!(chown.success());
        server.tool("initdb", &["-A", "trust", "-U", "chronicle", "-D"]);
        server.up();
        Some(server)
    }

    /// Runs `command` as the postgres user (the server refuses to run as root).
    fn as_postgres(&self, command: &[&str]) {
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .args(command)
            .current_dir("/")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{command:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `bin/NAME ARGS DATA-DIR` as the postgres user.
    fn tool(&self, name: &str, args: &[&str]) {
        let tool = self.bin.join(name);
        let mut command = vec![tool.to_str().unwrap()];
        command.extend_from_slice(args);
        command.push(self.data.to_str().unwrap());
        self.as_postgres(&command);
    }

    fn up(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.data.display()
        );
        let log = self.data.join("log");
        self.tool(
            "pg_ctl",
            &[
                "-w",
                "-l",
                log.to_str().unwrap(),
                "-o",
                &options,
                "start",
                "-D",
            ],
        );
    }

    /// Stops the server at once (no shutdown checkpoint), as a crash would.
    fn down(&self) {
        self.tool("pg_ctl", &["-w", "-m", "immediate", "stop", "-D"]);
    }

    fn dsn(&self) -> String {
        format!("postgres://chronicle@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let tool = self.bin.join("pg_ctl");
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(tool)
            .args(["-m", "immediate", "stop", "-D"])
            .arg(&self.data)
            .current_dir("/")
            .output();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// A TCP port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// PostgreSQL goes down while the agent writes to it and comes back: the refused batches wait
/// and every call is stored once, in order.
#[test]
fn postgres_down_mid_run_loses_nothing() {
    let name = "postgres_down_mid_run";
    if !bpf_available(name) {
        return;
    }
    let Some(server) = PrivatePostgres::start(name) else {
        return;
    };
    let dsn = server.dsn();
    let (code, stderr) = trace_hot_into(["--dsn", &dsn], 30_000, || {
        std::thread::sleep(Duration::from_millis(800));
        server.down();
        std::thread::sleep(Duration::from_millis(1200));
        server.up();
    });
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("; 30000 records written to "), "{stderr}");
    assert!(stderr.contains("chronicle: the store refused "), "{stderr}");
    let out = Command::new(chronicle_bin())
        .args(["export", "score", "-o", "-", "--dsn", &dsn])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(records.len(), 30_000);
    for (k, r) in records.iter().enumerate() {
        assert_eq!(check_score_record(r), k as i64, "{r}");
    }
}
