//! Capture plans and decoding, on synthetic signatures and register values.

use chronicle_symbols::{
    Fetch, FetchKind, FetchResult, FunctionPlan, Param, PlanLimits, Register, Signature, Type,
    Value, compile,
};

fn int(name: &str, signed: bool, size: u8) -> Type {
    Type::Int {
        name: name.to_owned(),
        signed,
        size,
    }
}

fn double() -> Type {
    Type::Float {
        name: "double".to_owned(),
        size: 8,
    }
}

fn color() -> Type {
    Type::Enum {
        name: "color".to_owned(),
        size: 4,
        signed: true,
        enumerators: vec![("RED".into(), 0), ("GREEN".into(), 5), ("BLUE".into(), -1)],
    }
}

fn sig(params: &[(&str, Type)], ret: Option<Type>) -> Signature {
    Signature {
        name: "f".to_owned(),
        linkage_name: None,
        params: params
            .iter()
            .map(|(name, ty)| Param {
                name: (*name).to_owned(),
                ty: ty.clone(),
                type_name: ty.display_name(),
            })
            .collect(),
        ret,
        ret_type_name: None,
        variadic: false,
        inlined: false,
    }
}

fn plan(params: &[(&str, Type)], ret: Option<Type>) -> FunctionPlan {
    compile(Some(&sig(params, ret)), &PlanLimits::default())
}

/// Decodes the entry and compares `args` and `unavailable` with the expectation.
#[track_caller]
fn check_entry(
    plan: &FunctionPlan,
    regs: [u64; 6],
    fetched: &[FetchResult],
    args: &[(&str, Value)],
    unavailable: &[(&str, &str)],
) {
    let decoded = plan.decode_entry(&regs, fetched);
    let got_args: Vec<(&str, &Value)> = decoded.args.iter().map(|(n, v)| (n.as_str(), v)).collect();
    let want_args: Vec<(&str, &Value)> = args.iter().map(|(n, v)| (*n, v)).collect();
    assert_eq!(got_args, want_args);
    let got: Vec<(&str, &str)> = decoded
        .unavailable
        .iter()
        .map(|(n, r)| (n.as_str(), r.as_str()))
        .collect();
    assert_eq!(got, unavailable);
}

#[track_caller]
fn check_return(
    plan: &FunctionPlan,
    rax: u64,
    rdx: u64,
    fetched: &[FetchResult],
    value: Option<Value>,
    unavailable: &[(&str, &str)],
) {
    let (got, missing) = plan.decode_return(rax, rdx, fetched);
    assert_eq!(got, value);
    let missing: Vec<(&str, &str)> = missing
        .iter()
        .map(|(n, r)| (n.as_str(), r.as_str()))
        .collect();
    assert_eq!(missing, unavailable);
}

fn reg(reg: Register) -> Fetch {
    Fetch {
        reg,
        offset: 0,
        kind: FetchKind::CString { max_len: 258 },
    }
}

fn stack(offset: i64) -> Fetch {
    Fetch {
        reg: Register::Rsp,
        offset,
        kind: FetchKind::Memory { len: 8 },
    }
}

#[test]
fn integers_are_masked_and_sign_extended() {
    let p = plan(
        &[
            ("a", int("int", true, 4)),
            ("b", int("unsigned int", false, 4)),
            ("c", int("long", true, 8)),
            ("d", int("unsigned long", false, 8)),
            ("e", int("short", true, 2)),
            ("f", int("i8", true, 1)),
        ],
        Some(int("unsigned char", false, 1)),
    );
    assert!(p.entry.is_empty());
    check_entry(
        &p,
        [
            0xffff_ffff_ffff_fff6, // -10 as int
            0xdead_0000_ffff_ffff, // garbage above u32::MAX
            u64::MAX,
            u64::MAX,
            0x1234_8000,
            0x7f_ff,
        ],
        &[],
        &[
            ("a", Value::Int(-10)),
            ("b", Value::UInt(u64::from(u32::MAX))),
            ("c", Value::Int(-1)),
            ("d", Value::UInt(u64::MAX)),
            ("e", Value::Int(-32768)),
            ("f", Value::Int(-1)),
        ],
        &[],
    );
    check_return(&p, 0x1ff, 0, &[], Some(Value::UInt(0xff)), &[]);
}

#[test]
fn bools_chars_enums_pointers() {
    let p = plan(
        &[
            ("ok", Type::Bool),
            ("letter", Type::Char { signed: true }),
            ("byte", Type::Char { signed: true }),
            ("ubyte", Type::Char { signed: false }),
            ("c", color()),
            ("unknown", color()),
        ],
        Some(Type::Pointer {
            pointee: "struct order".into(),
        }),
    );
    check_entry(
        &p,
        [0x100, 0x41, 0xff, 0xff, 0xffff_ffff, 7],
        &[],
        &[
            // Only the low byte of a bool is defined.
            ("ok", Value::Bool(false)),
            ("letter", Value::Str("A".into())),
            ("byte", Value::Int(-1)),
            ("ubyte", Value::UInt(255)),
            ("c", Value::Enum("BLUE".into())),
            ("unknown", Value::Int(7)),
        ],
        &[],
    );
    check_return(&p, 0x7ffd_0010, 0, &[], Some(Value::Ptr(0x7ffd_0010)), &[]);
    check_return(&p, 0, 0, &[], Some(Value::Null), &[]);
    assert!(!p.returns_void());
}

#[test]
fn c_strings() {
    let limits = PlanLimits { max_string: 8 };
    let p = compile(
        Some(&sig(
            &[
                ("a", Type::CString),
                ("b", Type::CString),
                ("c", Type::CString),
                ("d", Type::CString),
            ],
            None,
        )),
        &limits,
    );
    let string = |reg| Fetch {
        reg,
        offset: 0,
        kind: FetchKind::CString { max_len: 10 },
    };
    assert_eq!(
        p.entry,
        [
            string(Register::Rdi),
            string(Register::Rsi),
            string(Register::Rdx),
            string(Register::Rcx)
        ]
    );
    check_entry(
        &p,
        [0x1000, 0, 0x2000, 0x3000, 0, 0],
        &[
            // Ten bytes read: the string is longer than eight.
            FetchResult::Bytes(b"abcdefghi\0"),
            // A null pointer's fetch result is ignored.
            FetchResult::Failed(-14),
            FetchResult::Failed(-14),
            FetchResult::Bytes(b"\xff\xfe\0"),
        ],
        &[
            ("a", Value::Str("abcdefgh".into())),
            ("b", Value::Null),
            ("d", Value::Bytes(vec![0xff, 0xfe])),
        ],
        &[
            ("a", "truncated: longer than 8 bytes"),
            ("c", "unreadable memory at 0x2000 (errno 14)"),
        ],
    );
    // Exactly the limit is not truncated.
    check_entry(
        &p,
        [0x1000, 0, 0, 0, 0, 0],
        &[
            FetchResult::Bytes(b"abcdefgh\0"),
            FetchResult::Failed(-14),
            FetchResult::Failed(-14),
            FetchResult::Failed(-14),
        ],
        &[
            ("a", Value::Str("abcdefgh".into())),
            ("b", Value::Null),
            ("c", Value::Null),
            ("d", Value::Null),
        ],
        &[],
    );
    // A cut inside a UTF-8 sequence keeps the whole characters before it.
    check_entry(
        &p,
        [0x1000, 0, 0, 0, 0, 0],
        &[
            FetchResult::Bytes("abcdefg\u{e9}\0".as_bytes()),
            FetchResult::Failed(-14),
            FetchResult::Failed(-14),
            FetchResult::Failed(-14),
        ],
        &[
            ("a", Value::Str("abcdefg".into())),
            ("b", Value::Null),
            ("c", Value::Null),
            ("d", Value::Null),
        ],
        &[("a", "truncated: longer than 8 bytes")],
    );
    assert!(p.returns_void());
    check_return(&p, 0x1234, 0, &[], None, &[]);
}

#[test]
fn string_return() {
    let p = plan(&[], Some(Type::CString));
    assert_eq!(p.ret, [reg(Register::Rax)]);
    check_return(
        &p,
        0x1000,
        0,
        &[FetchResult::Bytes(b"hello\0")],
        Some(Value::Str("hello".into())),
        &[],
    );
    check_return(
        &p,
        0,
        0,
        &[FetchResult::Failed(-14)],
        Some(Value::Null),
        &[],
    );
    check_return(
        &p,
        0x1000,
        0,
        &[FetchResult::Failed(-14)],
        None,
        &[("return", "unreadable memory at 0x1000 (errno 14)")],
    );
}

#[test]
fn seventh_and_later_params_are_on_the_stack() {
    let long = || int("long", true, 8);
    let p = plan(
        &[
            ("a", long()),
            ("b", long()),
            ("c", long()),
            ("d", long()),
            ("e", long()),
            ("f", long()),
            ("g", long()),
            ("h", Type::CString),
            ("i", int("int", true, 4)),
            ("j", Type::CString),
        ],
        None,
    );
    assert_eq!(p.entry, [stack(8), stack(16), stack(24), stack(32)]);
    check_entry(
        &p,
        [1, 2, 3, 4, 5, 6],
        &[
            FetchResult::Bytes(&(-7i64).to_le_bytes()),
            FetchResult::Bytes(&0x5000u64.to_le_bytes()),
            FetchResult::Bytes(&0xffff_ffff_0000_0009u64.to_le_bytes()),
            FetchResult::Bytes(&0u64.to_le_bytes()),
        ],
        &[
            ("a", Value::Int(1)),
            ("b", Value::Int(2)),
            ("c", Value::Int(3)),
            ("d", Value::Int(4)),
            ("e", Value::Int(5)),
            ("f", Value::Int(6)),
            ("g", Value::Int(-7)),
            ("i", Value::Int(9)),
            ("j", Value::Null),
        ],
        &[(
            "h",
            "string pointer 0x5000 passed on the stack: string not read yet",
        )],
    );
    check_entry(
        &p,
        [1, 2, 3, 4, 5, 6],
        &[
            FetchResult::Failed(-14),
            FetchResult::Bytes(&[1, 2]),
            FetchResult::Bytes(&[0; 8]),
            FetchResult::Bytes(&[0; 8]),
        ],
        &[
            ("a", Value::Int(1)),
            ("b", Value::Int(2)),
            ("c", Value::Int(3)),
            ("d", Value::Int(4)),
            ("e", Value::Int(5)),
            ("f", Value::Int(6)),
            ("i", Value::Int(0)),
            ("j", Value::Null),
        ],
        &[
            ("g", "unreadable stack slot at rsp+8 (errno 14)"),
            ("h", "short read of stack slot at rsp+16 (2 bytes)"),
        ],
    );
}

#[test]
fn floats_do_not_take_integer_registers() {
    let p = plan(
        &[
            ("x", double()),
            ("n", int("int", true, 4)),
            ("y", double()),
            ("s", Type::CString),
        ],
        Some(double()),
    );
    assert_eq!(p.entry, [reg(Register::Rsi)]);
    check_entry(
        &p,
        [42, 0x1000, 0, 0, 0, 0],
        &[FetchResult::Bytes(b"hi\0")],
        &[("n", Value::Int(42)), ("s", Value::Str("hi".into()))],
        &[("x", "in FP register"), ("y", "in FP register")],
    );
    check_return(&p, 0, 0, &[], None, &[("return", "in FP register")]);
}

#[test]
fn aggregates_make_later_registers_unknown() {
    let point = Type::Struct {
        name: "point".into(),
        size: 8,
    };
    let p = plan(
        &[
            ("a", int("int", true, 4)),
            ("p", point.clone()),
            ("x", double()),
            ("b", int("int", true, 4)),
            ("big", int("__int128", true, 16)),
        ],
        Some(point),
    );
    assert!(p.entry.is_empty());
    // A small struct returned by value may still take a hidden pointer (C++ non-trivial
    // types do), so nothing is trusted after it.
    check_entry(
        &p,
        [1, 2, 3, 4, 5, 6],
        &[],
        &[],
        &[
            (
                "a",
                "register assignment unknown: the by-value return value may take a hidden pointer",
            ),
            ("p", "passed by value in registers/memory: not decoded yet"),
            ("x", "in FP register"),
            (
                "b",
                "register assignment unknown: the by-value return value may take a hidden pointer",
            ),
            (
                "big",
                "passed by value in registers/memory: not decoded yet",
            ),
        ],
    );
    check_return(
        &p,
        1,
        2,
        &[],
        None,
        &[(
            "return",
            "returned by value in registers/memory: not decoded yet",
        )],
    );

    let p = plan(
        &[
            ("a", int("int", true, 4)),
            ("big", int("__int128", true, 16)),
            ("b", int("int", true, 4)),
        ],
        None,
    );
    check_entry(
        &p,
        [1, 2, 3, 4, 5, 6],
        &[],
        &[("a", Value::Int(1))],
        &[
            (
                "big",
                "passed by value in registers/memory: not decoded yet",
            ),
            (
                "b",
                "register assignment unknown after a by-value aggregate",
            ),
        ],
    );
}

#[test]
fn large_struct_return_takes_rdi() {
    let big = Type::Struct {
        name: "big".into(),
        size: 64,
    };
    let p = plan(&[("a", int("int", true, 4))], Some(big));
    check_entry(
        &p,
        [0x7000, 9, 0, 0, 0, 0],
        &[],
        &[("a", Value::Int(9))],
        &[],
    );
}

#[test]
fn int128_return() {
    let p = plan(&[], Some(int("__int128", true, 16)));
    check_return(&p, u64::MAX, u64::MAX, &[], Some(Value::Int(-1)), &[]);
    check_return(&p, 5, 0, &[], Some(Value::Int(5)), &[]);
    check_return(
        &p,
        0,
        1,
        &[],
        None,
        &[(
            "return",
            "128-bit value 18446744073709551616 does not fit in 64 bits",
        )],
    );
    let p = plan(&[], Some(int("unsigned __int128", false, 16)));
    check_return(&p, u64::MAX, 0, &[], Some(Value::UInt(u64::MAX)), &[]);
}

#[test]
fn no_debug_info() {
    let p = compile(None, &PlanLimits::default());
    assert!(p.entry.is_empty() && p.ret.is_empty());
    assert!(!p.returns_void());
    check_entry(
        &p,
        [1, 2, 3, 4, 5, 6],
        &[],
        &[],
        &[("arguments", "no DWARF debug info: rebuild with -g")],
    );
    check_return(&p, 1, 0, &[], None, &[("return", "no DWARF debug info")]);
}

#[test]
fn long_double_takes_an_aligned_stack_slot() {
    let long = || int("long", true, 8);
    let long_double = Type::Float {
        name: "long double".into(),
        size: 16,
    };
    let mut params: Vec<(String, Type)> = (0..7).map(|i| (format!("a{i}"), long())).collect();
    params.push(("ld".into(), long_double));
    params.push(("after".into(), long()));
    let params: Vec<(&str, Type)> = params
        .iter()
        .map(|(n, t)| (n.as_str(), t.clone()))
        .collect();
    let p = plan(&params, None);
    // a6 at rsp+8, the long double at rsp+24..40 (16-byte aligned), `after` at rsp+40.
    assert_eq!(p.entry, [stack(8), stack(40)]);
    let decoded = p.decode_entry(
        &[0; 6],
        &[
            FetchResult::Bytes(&6u64.to_le_bytes()),
            FetchResult::Bytes(&8u64.to_le_bytes()),
        ],
    );
    assert_eq!(
        decoded.args[6..],
        [
            ("a6".into(), Value::Int(6)),
            ("after".into(), Value::Int(8))
        ]
    );
    assert_eq!(
        decoded.unavailable,
        [(
            "ld".to_owned(),
            "long double passed in memory: not decoded yet".to_owned()
        )]
    );
}
