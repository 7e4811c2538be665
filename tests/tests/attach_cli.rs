//! `chronicle attach` as a user meets it: shared libraries, wrong names, missing privileges,
//! processes that go away.

use chronicle_tests::{
    Opt, Running, bpf_available, build_c, build_id, build_ledger, chronicle, export, scratch,
};
use serde_json::json;
use std::io::{BufRead, BufReader, Read};

#[test]
fn traces_a_function_in_a_shared_library() {
    let name = "traces_a_function_in_a_shared_library";
    if !bpf_available(name) {
        return;
    }
    let dir = scratch(name);
    let (app, lib) = build_ledger();
    let service = Running::start(&app, &[]);
    let db = dir.join("chronicle.db");
    let pid = service.pid().to_string();
    let out = chronicle(&[
        "attach",
        "--pid",
        &pid,
        "--func",
        "ledger_post",
        "--duration",
        "0.5",
        "--db",
        db.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records = export(&db, "ledger_post");
    assert!(
        records.len() >= 10,
        "about 100 calls in 0.5 s, got {}",
        records.len()
    );
    for r in &records {
        assert_eq!(r["binary"], lib.to_str().unwrap());
        assert_eq!(r["build_id"], build_id(&lib));
        assert_eq!(r["args"], json!({"account": "savings", "cents": -42}));
        assert_eq!(r["return"], json!(7 * 1000 - 42));
        assert_eq!(r["status"], "ok");
    }
}

/// Attaches to a running bank with `--func FUNC`, expects a usage error, returns its stderr.
fn refused_func(test: &str, func: &str) -> Option<String> {
    if !bpf_available(test) {
        return None;
    }
    let bank = build_c("bank", Opt::O0);
    let service = Running::start(&bank, &["--interval-ms", "50"]);
    let pid = service.pid().to_string();
    let db = scratch(test).join("chronicle.db");
    let out = chronicle(&[
        "attach",
        "--pid",
        &pid,
        "--func",
        func,
        "--db",
        db.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    Some(stderr)
}

#[test]
fn started_program_is_traced_in_its_shared_library_from_the_first_call() {
    let name = "started_program_is_traced_in_its_shared_library_from_the_first_call";
    if !bpf_available(name) {
        return;
    }
    let dir = scratch(name);
    let (app, lib) = build_ledger();
    let db = dir.join("chronicle.db");
    // libledger.so is not mapped until the program runs: it is found through DT_NEEDED and
    // the program's run path.
    let out = chronicle(&[
        "attach",
        "--func",
        "ledger_post",
        "--db",
        db.to_str().unwrap(),
        "--",
        app.to_str().unwrap(),
        "30",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records = export(&db, "ledger_post");
    assert_eq!(records.len(), 30, "every call from the first one is stored");
    for r in &records {
        assert_eq!(r["binary"], lib.canonicalize().unwrap().to_str().unwrap());
        assert_eq!(r["build_id"], build_id(&lib));
        assert_eq!(r["args"], json!({"account": "savings", "cents": -42}));
        assert_eq!(r["return"], json!(7 * 1000 - 42));
    }
}

#[test]
fn unknown_function_lists_close_matches() {
    if let Some(stderr) = refused_func("unknown_function_lists_close_matches", "transfr") {
        assert!(stderr.contains("no function `transfr`"), "{stderr}");
        assert!(stderr.contains("closest matches: transfer"), "{stderr}");
    }
}

#[test]
fn missing_process_is_a_usage_error() {
    let db = scratch("missing_process_is_a_usage_error").join("chronicle.db");
    // Pid 0x3fffffff is above any pid_max the kernel allows.
    let out = chronicle(&[
        "attach",
        "--pid",
        "1073741823",
        "--func",
        "main",
        "--db",
        db.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no process with pid 1073741823"),
        "{stderr}"
    );
}

#[test]
fn without_privileges_says_which_capabilities() {
    let name = "without_privileges_says_which_capabilities";
    if !bpf_available(name) {
        return;
    }
    // Drop to nobody, with no capabilities, and try to trace one of nobody's processes.
    // Everything nobody touches lives in a world-readable folder of its own: the checkout
    // may sit below a folder only root can enter.
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("chronicle-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let bank = dir.join("bank");
    std::fs::copy(build_c("bank", Opt::O0), &bank).unwrap();
    let chronicle_bin = dir.join("chronicle");
    std::fs::copy(chronicle_tests::chronicle_bin(), &chronicle_bin).unwrap();
    let setpriv = [
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
    ];
    let mut service_args = setpriv.to_vec();
    service_args.extend([bank.to_str().unwrap(), "--interval-ms", "50"]);
    let service = Running::start(std::path::Path::new("setpriv"), &service_args);
    let pid = service.pid().to_string();
    let db = dir.join("chronicle.db");
    let out = std::process::Command::new("setpriv")
        .args(setpriv)
        .arg(&chronicle_bin)
        .args([
            "attach",
            "--pid",
            &pid,
            "--func",
            "transfer",
            "--db",
            db.to_str().unwrap(),
        ])
        .output()
        .expect("run setpriv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("CAP_BPF") && stderr.contains("CAP_PERFMON"),
        "{stderr}"
    );
    drop(service);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn process_exit_ends_tracing_cleanly() {
    let name = "process_exit_ends_tracing_cleanly";
    if !bpf_available(name) {
        return;
    }
    let dir = scratch(name);
    let bank = build_c("bank", Opt::O0);
    let mut service = Running::start(&bank, &["--interval-ms", "5"]);
    let pid = service.pid().to_string();
    let db = dir.join("chronicle.db");
    let mut attach = std::process::Command::new(chronicle_tests::chronicle_bin())
        .args([
            "attach",
            "--pid",
            &pid,
            "--func",
            "greeting",
            "--db",
            db.to_str().unwrap(),
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once the probes are in place, let a few rounds run, then the process dies under us.
    let mut stderr = BufReader::new(attach.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.starts_with("chronicle: tracing greeting("), "{line}");
    std::thread::sleep(std::time::Duration::from_millis(200));
    service.child.kill().unwrap();
    let status = attach.wait().unwrap();
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert!(status.success(), "{rest}");
    assert!(rest.contains("(process exited)"), "{rest}");
    let records = export(&db, "greeting");
    assert!(!records.is_empty());
    for r in &records {
        assert_eq!(r["args"], json!({"name": "world"}), "{r}");
        match r["status"].as_str().unwrap() {
            "ok" => assert_eq!(r["return"], "hello, world", "{r}"),
            // Killed in the middle of a call.
            _ => assert_eq!(
                r["unavailable"]["return"], "the thread exited before the call returned",
                "{r}"
            ),
        }
    }
}

#[test]
fn indirect_functions_are_refused_with_a_reason() {
    // glibc's strcmp is an IFUNC: the symbol is its resolver, not the comparison.
    if let Some(stderr) = refused_func("indirect_functions_are_refused_with_a_reason", "strcmp") {
        assert!(
            stderr.contains("`strcmp` in ") && stderr.contains("is an indirect function"),
            "{stderr}"
        );
    }
}

/// Records hold arguments: the database is created mode 0600, and under sudo it belongs to
/// the user who ran sudo, who can then read it without root.
#[test]
fn the_database_is_private_and_belongs_to_the_sudo_user() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let name = "the_database_is_private_and_belongs_to_the_sudo_user";
    if !bpf_available(name) {
        return;
    }
    const NOBODY: u32 = 65534;
    // Under the system temp directory: the checkout's own directories may not let another
    // user through (a `mktemp -d` clone is 0700).
    let dir = std::env::temp_dir().join(format!("chronicle-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(NOBODY), Some(NOBODY)).unwrap();
    let bank = build_c("bank", Opt::O0);
    let service = Running::start(&bank, &["--interval-ms", "10"]);
    let db = dir.join("chronicle.db");
    // `attach` to the bank for `secs` into `db`.
    let attach = |db: &std::path::Path, secs: &str| {
        let mut command = std::process::Command::new(chronicle_tests::chronicle_bin());
        command
            .args(["attach", "--pid", &service.pid().to_string()])
            .args(["--func", "factorial", "--duration", secs, "--db"])
            .arg(db);
        command
    };
    let out = attach(&db, "0.5")
        .env("SUDO_UID", NOBODY.to_string())
        .env("SUDO_GID", NOBODY.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta = std::fs::metadata(&db).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.permissions().mode() & 0o777),
        (NOBODY, NOBODY, 0o600)
    );
    for side in ["chronicle.db-wal", "chronicle.db-shm"] {
        if let Ok(meta) = std::fs::metadata(dir.join(side)) {
            assert_eq!(
                (meta.uid(), meta.permissions().mode() & 0o777),
                (NOBODY, 0o600),
                "{side}"
            );
        }
    }
    // The sudo user reads it without root (with a copy of the binary it can reach).
    let bin = dir.join("chronicle");
    std::fs::copy(chronicle_tests::chronicle_bin(), &bin).unwrap();
    let read = std::process::Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--",
        ])
        .arg(&bin)
        .args([
            "export",
            "factorial",
            "-o",
            "-",
            "--limit",
            "1",
            "--db",
            db.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    let records: serde_json::Value = serde_json::from_slice(&read.stdout).unwrap();
    assert_eq!(records[0]["function"], "factorial");
    // Without sudo, root's database is root's alone.
    let other = dir.join("root.db");
    let out = attach(&other, "0.2")
        .env_remove("SUDO_UID")
        .env_remove("SUDO_GID")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta = std::fs::metadata(&other).unwrap();
    assert_eq!((meta.uid(), meta.permissions().mode() & 0o777), (0, 0o600));
    let _ = std::fs::remove_dir_all(&dir);
}
