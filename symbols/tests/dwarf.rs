//! DWARF signatures of functions in programs built at test time, and plans compiled from them.

mod common;

use std::path::Path;

use chronicle_symbols::{
    DebugInfo, ElfFile, PlanLimits, Signature, TypeId, TypeKind, Types, Value, compile, resolve,
};
use common::{Machine, open, run};

#[track_caller]
fn signature(elf: &ElfFile, query: &str) -> Signature {
    let found = resolve(query, std::slice::from_ref(elf)).unwrap_or_else(|e| panic!("{e}"));
    let debug = DebugInfo::load(elf).unwrap();
    assert!(debug.has_debug_info());
    let sig = debug.signature(found[0].symbol.address).unwrap();
    assert!(debug.errors().is_empty(), "{:?}", debug.errors());
    sig.unwrap_or_else(|| panic!("no signature for {query}"))
}

/// A compact rendering of a resolved type: `i32`, `u8`, `char`, `*char`, `&struct x(8)`.
fn render(types: &Types, id: TypeId) -> String {
    render_depth(types, id, 0)
}

fn render_depth(types: &Types, id: TypeId, depth: u32) -> String {
    let def = types.get(id);
    let bits = def.size.unwrap_or(0) * 8;
    match &def.kind {
        TypeKind::Void => "void".into(),
        TypeKind::Int { signed: true } => format!("i{bits}"),
        TypeKind::Int { signed: false } => format!("u{bits}"),
        TypeKind::Bool => "bool".into(),
        TypeKind::Char { signed: true } => "char".into(),
        TypeKind::Char { signed: false } => "uchar".into(),
        TypeKind::RustChar => "rchar".into(),
        TypeKind::Float => format!("f{bits}"),
        TypeKind::Enum { enumerators, .. } => {
            let e: Vec<String> = enumerators
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect();
            format!("enum {}[{}]", def.name, e.join(","))
        }
        TypeKind::Pointer { pointee, reference } if depth < 3 => format!(
            "{}{}",
            if *reference { "&" } else { "*" },
            render_depth(types, *pointee, depth + 1)
        ),
        TypeKind::Pointer { .. } => "*..".into(),
        TypeKind::Struct { .. } => format!("{}({})", def.name, def.size.unwrap_or(0)),
        TypeKind::Union { .. } => format!("{}({})", def.name, def.size.unwrap_or(0)),
        TypeKind::Array { element, count } => {
            format!(
                "{}[{}]",
                render_depth(types, *element, depth + 1),
                count.unwrap_or(0)
            )
        }
        TypeKind::Function => "fn".into(),
        TypeKind::Unknown => format!("?{}", def.name),
    }
}

/// Parameters as `(name, written type, rendered resolved type)`.
#[track_caller]
fn check_params(sig: &Signature, expect: &[(&str, &str, &str)]) {
    let got: Vec<(String, String, String)> = sig
        .params
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                p.type_name.clone(),
                render(&sig.types, p.ty),
            )
        })
        .collect();
    let expect: Vec<(String, String, String)> = expect
        .iter()
        .map(|(n, w, t)| (n.to_string(), w.to_string(), t.to_string()))
        .collect();
    assert_eq!(got, expect);
}

#[track_caller]
fn ret(sig: &Signature) -> Option<String> {
    sig.ret.map(|t| render(&sig.types, t))
}

#[test]
fn c_transfer() {
    let sig = signature(&open(&common::c_program()), "transfer");
    assert_eq!(sig.name, "transfer");
    check_params(
        &sig,
        &[
            ("from", "const char *", "*char"),
            ("to", "const char *", "*char"),
            ("cents", "long int", "i64"),
        ],
    );
    assert_eq!(ret(&sig).as_deref(), Some("i32"));
    assert_eq!(sig.ret_type_name.as_deref(), Some("int"));
    assert!(!sig.variadic);
}

#[test]
fn c_mixed_types() {
    let elf = open(&common::c_program());
    let sig = signature(&elf, "mixed");
    check_params(
        &sig,
        &[
            ("a", "unsigned char", "uchar"),
            ("b", "short int", "i16"),
            ("c", "long long unsigned int", "u64"),
            ("d", "_Bool", "bool"),
            ("e", "char", "char"),
            ("f", "color", "enum color[RED=0,GREEN=5,BLUE=-1]"),
            ("g", "double", "f64"),
            ("h", "void *", "*void"),
        ],
    );

    let sig = signature(&elf, "with_typedef");
    check_params(
        &sig,
        &[
            ("amount", "money_t", "u64"),
            ("note", "char *restrict", "*char"),
            ("flag", "volatile int", "i32"),
        ],
    );
    assert_eq!(sig.ret_type_name.as_deref(), Some("money_t"));

    let sig = signature(&elf, "by_value");
    check_params(
        &sig,
        &[
            ("p", "struct point", "struct point(8)"),
            ("after", "int", "i32"),
        ],
    );

    let sig = signature(&elf, "nothing");
    assert_eq!((sig.params.len(), sig.ret), (0, None));
    assert_eq!(ret(&signature(&elf, "greeting")).as_deref(), Some("*char"));
    let sig = signature(&elf, "main");
    check_params(
        &sig,
        &[("argc", "int", "i32"), ("argv", "char **", "**char")],
    );
}

/// `transfer("alice", NULL, -250)` as the entry probe of `plan` decodes it, from the
/// registers the calling convention uses.
#[track_caller]
fn check_transfer(plan: &chronicle_symbols::plan::FunctionPlan) {
    assert_eq!(plan.entry_site.offset, 0);
    let decoded = Machine::default()
        .arg(0, 0x5000)
        .arg(1, 0)
        .arg(2, (-250i64) as u64)
        .memory(0x5000, b"alice\0")
        .decode_entry(plan);
    assert_eq!(
        decoded.args,
        [
            ("from".to_owned(), Value::Str("alice".into())),
            ("to".to_owned(), Value::Null),
            ("cents".to_owned(), Value::Int(-250)),
        ]
    );
    assert!(decoded.unavailable.is_empty());
}

#[test]
fn c_plan_from_dwarf() {
    // -O0: the parameters live in the frame once the prologue has stored them; before it,
    // the calling convention has these scalars in registers, so the probe stays on the first
    // instruction (which the return probe shares, and which the kernel emulates).
    let elf = open(&common::c_program());
    let sig = signature(&elf, "transfer");
    check_transfer(&compile(Some(&sig), elf.data(), &PlanLimits::default()));
    // A struct passed by value is not classified: its frame slot after the prologue.
    let sig = signature(&elf, "by_value");
    let plan = compile(Some(&sig), elf.data(), &PlanLimits::default());
    assert!(plan.entry_site.offset > 0);
    assert_eq!(plan.entry_site.cfa.reg, 6, "gcc -O0 frames are rbp-based");

    // -O2: they are in registers at the first instruction.
    let elf = open(&common::c_program_o2());
    let sig = signature(&elf, "transfer");
    let plan = compile(Some(&sig), elf.data(), &PlanLimits::default());
    check_transfer(&plan);
    // The upper half of eax is undefined for an `int` return.
    let r = Machine::default()
        .reg(0, 0xdead_beef_ffff_fffe)
        .decode_return(&plan);
    assert_eq!((r.value, r.unavailable), (Some(Value::Int(-2)), vec![]));
    // An unreadable string is marked, with the address.
    let decoded = Machine::default().arg(0, 0x9000).decode_entry(&plan);
    assert_eq!(
        decoded.unavailable,
        [(
            "from".to_owned(),
            "unreadable memory (errno 14) at 0x9000".to_owned()
        )]
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
            ("this", "const shop::Cart *const", "*shop::Cart(4)"),
            ("tax", "int", "i32"),
        ],
    );
    let sig = signature(&elf, "process_order");
    check_params(
        &sig,
        &[
            ("id", "long int", "i64"),
            ("qty", "short unsigned int", "u16"),
        ],
    );
    let sig = signature(&elf, "shop::process(char const*)");
    check_params(&sig, &[("name", "const char *", "*char")]);
}

#[test]
fn rust_signatures() {
    for path in [common::rust_program(), common::rust_program_v0()] {
        let elf = open(&path);
        let sig = signature(&elf, "orders::process_order");
        assert_eq!(sig.name, "process_order");
        check_params(&sig, &[("id", "u64", "u64"), ("qty", "i32", "i32")]);
        assert_eq!(ret(&sig).as_deref(), Some("i64"));
        let sig = signature(&elf, "payments::process_order");
        check_params(&sig, &[("flag", "bool", "bool")]);
        assert_eq!(ret(&sig).as_deref(), Some("bool"));
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
    assert_eq!(render(&sig.types, sig.params[2].ty), "i64");
}

#[test]
fn missing_file_signature_is_none() {
    let elf = open(&common::c_program());
    let debug = DebugInfo::load(&elf).unwrap();
    assert_eq!(debug.signature(1).unwrap(), None);
    assert!(Path::new(debug.path()).exists());
}
