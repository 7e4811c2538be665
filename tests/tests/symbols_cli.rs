//! `chronicle symbols`: signatures and what will be captured, for binaries built at test
//! time; no privileges needed.

use chronicle_tests::{Opt, build_c, build_rust, chronicle};
use serde_json::{Value, json};

fn symbols_json(binary: &std::path::Path, filter: &str) -> Value {
    let out = chronicle(&[
        "symbols",
        binary.to_str().unwrap(),
        "--filter",
        filter,
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn json_report_says_where_each_value_is_read() {
    let shapes = build_c("shapes", Opt::O2);
    let mut report = symbols_json(&shapes, "widths");
    let entry = report[0].as_object_mut().unwrap();
    assert!(entry.remove("address").unwrap().as_u64().unwrap() > 0);
    assert!(entry.remove("size").unwrap().as_u64().unwrap() > 0);
    let param = |name: &str, ty: &str, from: &str| json!({"name": name, "type": ty, "from": from, "unavailable": null});
    let expected = json!({
        "name": "widths",
        "symbol": "widths",
        "signature": "widths(a: int8_t, b: uint8_t, c: int16_t, d: uint16_t, e: int32_t, \
                      f: uint32_t, g: int64_t, h: uint64_t) -> int64_t",
        "language": "C",
        "entry_offset": 0,
        "params": [
            param("a", "int8_t", "rdi"),
            param("b", "uint8_t", "rsi"),
            param("c", "int16_t", "rdx"),
            param("d", "uint16_t", "rcx"),
            param("e", "int32_t", "r8"),
            param("f", "uint32_t", "r9"),
            param("g", "int64_t", "memory (8 bytes)"),
            param("h", "uint64_t", "memory (8 bytes)"),
        ],
        "return": param("return", "int64_t", "rax"),
        "inlined": false,
        "note": null,
    });
    assert_eq!(report, json!([expected]));
    // -O0 stores parameters in the frame in its prologue; before it, the calling convention
    // has them where -O2 does, so the entry probe stays on the first instruction.
    let report = symbols_json(&build_c("shapes", Opt::O0), "widths");
    assert_eq!(report[0]["entry_offset"], 0);
    assert_eq!(report[0]["params"], expected["params"]);
}

#[test]
fn text_report_for_rust_functions() {
    let kinds = build_rust("kinds", Opt::O2);
    let out = chronicle(&[
        "symbols",
        kinds.to_str().unwrap(),
        "--filter",
        "kinds::maybe",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    assert!(lines[0].starts_with("kinds::maybe  (0x"), "{text}");
    assert_eq!(
        &lines[1..4],
        [
            "  maybe(x: core::option::Option<u32>) -> core::option::Option<u32>",
            "    x            core::option::Option<u32>    from rdi + rsi",
            "    return       core::option::Option<u32>    from rax + rdx",
        ],
        "{text}"
    );
}

#[test]
fn bad_input_is_a_usage_error() {
    let out = chronicle(&["symbols", "/nonexistent/binary"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "chronicle: cannot open /nonexistent/binary: No such file or directory (os error 2); \
         check the path and that you may read it\n"
    );
    let shapes = build_c("shapes", Opt::O2);
    let out = chronicle(&[
        "symbols",
        shapes.to_str().unwrap(),
        "--filter",
        "no_such_fn",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "chronicle: no function of {} matches \"no_such_fn\"\n",
            shapes.display()
        )
    );
}
