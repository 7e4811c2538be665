//! DWARF signatures of functions in programs built at test time, and plans compiled from them.

mod common;

use std::path::Path;

use chronicle_symbols::{
    DebugInfo, ElfFile, FetchResult, Param, PlanLimits, Signature, Type, Value, compile, resolve,
};
use common::{open, run};

#[track_caller]
fn signature(elf: &ElfFile, query: &str) -> Signature {
    let found = resolve(query, std::slice::from_ref(elf)).unwrap_or_else(|e| panic!("{e}"));
    let debug = DebugInfo::load(elf).unwrap();
    assert!(debug.has_debug_info());
    let sig = debug.signature(found[0].symbol.address).unwrap();
    assert!(debug.errors().is_empty(), "{:?}", debug.errors());
    sig.unwrap_or_else(|| panic!("no signature for {query}"))
}

fn int(name: &str, signed: bool, size: u8) -> Type {
    Type::Int {
        name: name.to_owned(),
        signed,
        size,
    }
}

/// Parameters as `(name, written type, resolved type)`.
#[track_caller]
fn check_params(sig: &Signature, expect: &[(&str, &str, Type)]) {
    let got: Vec<(&str, &str, &Type)> = sig
        .params
        .iter()
        .map(
            |Param {
                 name,
                 ty,
                 type_name,
             }| (name.as_str(), type_name.as_str(), ty),
        )
        .collect();
    let expect: Vec<(&str, &str, &Type)> = expect.iter().map(|(n, w, t)| (*n, *w, t)).collect();
    assert_eq!(got, expect);
}

#[test]
fn c_transfer() {
    let sig = signature(&open(&common::c_program()), "transfer");
    assert_eq!(sig.name, "transfer");
    check_params(
        &sig,
        &[
            ("from", "const char *", Type::CString),
            ("to", "const char *", Type::CString),
            ("cents", "long int", int("long int", true, 8)),
        ],
    );
    assert_eq!(sig.ret, Some(int("int", true, 4)));
    assert_eq!(sig.ret_type_name.as_deref(), Some("int"));
    assert!(!sig.variadic);
}

fn color() -> Type {
    Type::Enum {
        name: "color".to_owned(),
        size: 4,
        signed: true,
        enumerators: vec![("RED".into(), 0), ("GREEN".into(), 5), ("BLUE".into(), -1)],
    }
}

#[test]
fn c_mixed_types() {
    let elf = open(&common::c_program());
    let sig = signature(&elf, "mixed");
    check_params(
        &sig,
        &[
            ("a", "unsigned char", Type::Char { signed: false }),
            ("b", "short int", int("short int", true, 2)),
            (
                "c",
                "long long unsigned int",
                int("long long unsigned int", false, 8),
            ),
            ("d", "_Bool", Type::Bool),
            ("e", "char", Type::Char { signed: true }),
            ("f", "color", color()),
            (
                "g",
                "double",
                Type::Float {
                    name: "double".into(),
                    size: 8,
                },
            ),
            (
                "h",
                "void *",
                Type::Pointer {
                    pointee: "void".into(),
                },
            ),
        ],
    );

    let sig = signature(&elf, "with_typedef");
    check_params(
        &sig,
        &[
            ("amount", "money_t", int("long unsigned int", false, 8)),
            ("note", "char *restrict", Type::CString),
            ("flag", "volatile int", int("int", true, 4)),
        ],
    );
    assert_eq!(sig.ret_type_name.as_deref(), Some("money_t"));

    let sig = signature(&elf, "by_value");
    check_params(
        &sig,
        &[
            (
                "p",
                "point",
                Type::Struct {
                    name: "point".into(),
                    size: 8,
                },
            ),
            ("after", "int", int("int", true, 4)),
        ],
    );

    let sig = signature(&elf, "nothing");
    assert_eq!((sig.params.len(), sig.ret.as_ref()), (0, None));
    assert_eq!(signature(&elf, "greeting").ret, Some(Type::CString));
    let sig = signature(&elf, "main");
    check_params(
        &sig,
        &[
            ("argc", "int", int("int", true, 4)),
            (
                "argv",
                "char **",
                Type::Pointer {
                    pointee: "char *".into(),
                },
            ),
        ],
    );
}

#[test]
fn c_plan_from_dwarf() {
    let elf = open(&common::c_program());
    let sig = signature(&elf, "transfer");
    let plan = compile(Some(&sig), &PlanLimits::default());
    assert_eq!(plan.entry.len(), 2);
    let from = b"alice\0";
    let decoded = plan.decode_entry(
        &[0x1000, 0, (-250i64) as u64, 0, 0, 0],
        &[FetchResult::Bytes(from), FetchResult::Bytes(b"")],
    );
    assert_eq!(
        decoded.args,
        [
            ("from".to_owned(), Value::Str("alice".into())),
            ("to".to_owned(), Value::Null),
            ("cents".to_owned(), Value::Int(-250)),
        ]
    );
    assert!(decoded.unavailable.is_empty());
    // The upper half of eax is undefined for an `int` return.
    assert_eq!(
        plan.decode_return(0xdead_beef_ffff_fffe, 0, &[]),
        (Some(Value::Int(-2)), vec![])
    );
}

#[test]
fn cpp_signatures() {
    let elf = open(&common::cpp_program());
    let sig = signature(&elf, "shop::Cart::total");
    assert_eq!(sig.name, "total");
    assert_eq!(sig.linkage_name.as_deref(), Some("_ZNK4shop4Cart5totalEi"));
    check_params(
        &sig,
        &[
            (
                "this",
                "const Cart *const",
                Type::Pointer {
                    pointee: "const Cart".into(),
                },
            ),
            ("tax", "int", int("int", true, 4)),
        ],
    );
    let sig = signature(&elf, "process_order");
    check_params(
        &sig,
        &[
            ("id", "long int", int("long int", true, 8)),
            (
                "qty",
                "short unsigned int",
                int("short unsigned int", false, 2),
            ),
        ],
    );
    let sig = signature(&elf, "shop::process(char const*)");
    check_params(&sig, &[("name", "const char *", Type::CString)]);
}

#[test]
fn rust_signatures() {
    for path in [common::rust_program(), common::rust_program_v0()] {
        let elf = open(&path);
        let sig = signature(&elf, "orders::process_order");
        assert_eq!(sig.name, "process_order");
        check_params(
            &sig,
            &[
                ("id", "u64", int("u64", false, 8)),
                ("qty", "i32", int("i32", true, 4)),
            ],
        );
        assert_eq!(sig.ret, Some(int("i64", true, 8)));
        let sig = signature(&elf, "payments::process_order");
        check_params(&sig, &[("flag", "bool", Type::Bool)]);
        assert_eq!(sig.ret, Some(Type::Bool));
    }
}

#[test]
fn no_debug_info() {
    let stripped = common::out_dir().join("orders-c-stripped");
    run(
        "strip",
        &[
            "--strip-debug",
            "-o",
            stripped.to_str().unwrap(),
            common::c_program().to_str().unwrap(),
        ],
    );
    let elf = open(&stripped);
    let debug = DebugInfo::load(&elf).unwrap();
    assert!(!debug.has_debug_info());
    let transfer = elf
        .functions()
        .iter()
        .find(|f| f.name == "transfer")
        .unwrap();
    assert_eq!(debug.signature(transfer.address).unwrap(), None);
}

#[test]
fn separate_debug_file_by_debuglink() {
    let dir = common::out_dir().join("debuglink");
    std::fs::create_dir_all(&dir).unwrap();
    let full = common::c_program();
    let debug_file = dir.join("orders.debug");
    let binary = dir.join("orders");
    run(
        "objcopy",
        &[
            "--only-keep-debug",
            full.to_str().unwrap(),
            debug_file.to_str().unwrap(),
        ],
    );
    run(
        "objcopy",
        &[
            "--strip-debug",
            &format!("--add-gnu-debuglink={}", debug_file.display()),
            full.to_str().unwrap(),
            binary.to_str().unwrap(),
        ],
    );
    let elf = open(&binary);
    assert!(!elf.has_debug_info());
    assert_eq!(elf.debuglink().map(|(name, _)| name), Some("orders.debug"));
    let debug = DebugInfo::load(&elf).unwrap();
    assert_eq!(debug.path(), debug_file);
    let sig = signature(&elf, "transfer");
    assert_eq!(sig.params.len(), 3);
}

#[test]
fn compressed_debug_sections() {
    let out = common::out_dir().join("orders-c-gz");
    let src = common::fixture("orders.c");
    let extra = common::fixture("orders_extra.c");
    run(
        "gcc",
        &[
            "-g",
            "-O0",
            "-gz=zlib",
            "-o",
            out.to_str().unwrap(),
            src.to_str().unwrap(),
            extra.to_str().unwrap(),
        ],
    );
    let sections = run("readelf", &["-SW", out.to_str().unwrap()]);
    let info = sections
        .lines()
        .find(|l| l.contains(".debug_info"))
        .unwrap();
    // The flags column holds `C` for SHF_COMPRESSED.
    assert!(info.split_whitespace().any(|w| w == "C"), "{info}");
    let sig = signature(&open(&out), "transfer");
    assert_eq!(sig.params[2].ty, int("long int", true, 8));
}

#[test]
fn missing_file_signature_is_none() {
    let elf = open(&common::c_program());
    let debug = DebugInfo::load(&elf).unwrap();
    assert_eq!(debug.signature(1).unwrap(), None);
    assert!(Path::new(debug.path()).exists());
}
