//! Decoding fetched bytes with plans compiled from the DWARF of programs built at test
//! time: pointer chains and their limits, cycles, unreadable memory, truncation and the
//! capture budget. The probe is simulated by `common::Machine`, byte for byte.

mod common;

use chronicle_symbols::plan::FunctionPlan;
use chronicle_symbols::{DebugInfo, PlanLimits, Value, compile, resolve};
use common::{Machine, open};
use serde_json::json;

fn shapes_plan(function: &str, limits: &PlanLimits) -> FunctionPlan {
    let elf = open(&common::shapes_o2());
    let found = resolve(function, std::slice::from_ref(&elf)).unwrap();
    let debug = DebugInfo::load(&elf).unwrap();
    let sig = debug.signature(found[0].symbol.address).unwrap().unwrap();
    compile(Some(&sig), elf.data(), limits)
}

/// `struct node { int32_t value; struct node *next; }` at `at`.
fn node(value: i32, next: u64) -> Vec<u8> {
    let mut b = vec![0u8; 16];
    b[..4].copy_from_slice(&value.to_le_bytes());
    b[8..].copy_from_slice(&next.to_le_bytes());
    b
}

fn args_json(decoded: &chronicle_symbols::DecodedArgs) -> serde_json::Value {
    let mut args = serde_json::Map::new();
    for (name, value) in &decoded.args {
        args.insert(name.clone(), value.to_json());
    }
    let unavailable: serde_json::Map<_, _> = decoded
        .unavailable
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    json!({"args": args, "unavailable": unavailable})
}

#[test]
fn pointer_chains_follow_to_the_depth_limit() {
    let machine = Machine::default()
        .arg(0, 0x1000)
        .memory(0x1000, &node(1, 0x2000))
        .memory(0x2000, &node(2, 0x3000))
        .memory(0x3000, &node(3, 0x4000))
        .memory(0x4000, &node(4, 0));
    let plan = shapes_plan("list_len", &PlanLimits::default());
    assert_eq!(
        args_json(&machine.decode_entry(&plan)),
        json!({
            "args": {"n": {"value": 1, "next": {"value": 2, "next": {"value": 3, "next": {"ptr": "0x4000"}}}}},
            "unavailable": {"n.next.next.next": "not followed: deeper than 3 pointers (max_depth)"},
        })
    );
    let shallow = PlanLimits {
        max_depth: 1,
        ..PlanLimits::default()
    };
    let plan = shapes_plan("list_len", &shallow);
    assert_eq!(
        args_json(&machine.decode_entry(&plan)),
        json!({
            "args": {"n": {"value": 1, "next": {"ptr": "0x2000"}}},
            "unavailable": {"n.next": "not followed: deeper than 1 pointers (max_depth)"},
        })
    );
}

#[test]
fn cycles_end_at_the_depth_limit() {
    let machine = Machine::default()
        .arg(0, 0x1000)
        .memory(0x1000, &node(1, 0x1000));
    let plan = shapes_plan("list_len", &PlanLimits::default());
    let decoded = machine.decode_entry(&plan);
    assert_eq!(
        decoded.args[0].1.to_json(),
        json!({"value": 1, "next": {"value": 1, "next": {"value": 1, "next": {"ptr": "0x1000"}}}})
    );
}

#[test]
fn unreadable_and_null_pointers_are_marked_not_guessed() {
    let plan = shapes_plan("list_len", &PlanLimits::default());
    // The second node is not mapped.
    let machine = Machine::default()
        .arg(0, 0x1000)
        .memory(0x1000, &node(1, 0xdead_0000));
    assert_eq!(
        args_json(&machine.decode_entry(&plan)),
        json!({
            "args": {"n": {"value": 1, "next": {"ptr": "0xdead0000"}}},
            "unavailable": {"n.next": "unreadable memory (errno 14) at 0xdead0000"},
        })
    );
    let null = Machine::default().arg(0, 0);
    assert_eq!(
        args_json(&null.decode_entry(&plan)),
        json!({"args": {"n": null}, "unavailable": {}})
    );
}

#[test]
fn strings_are_truncated_with_a_note() {
    let limits = PlanLimits {
        max_string: 8,
        ..PlanLimits::default()
    };
    let plan = shapes_plan("status_name", &limits);
    let machine = Machine::default()
        .arg(0, (-1i64) as u64)
        .arg(1, 0x5000)
        .memory(0x5000, b"abcdefghijklmnop\0");
    assert_eq!(
        args_json(&machine.decode_entry(&plan)),
        json!({
            "args": {"s": "CANCELLED", "codes": "abcdefgh"},
            "unavailable": {"codes": "truncated: longer than 8 bytes"},
        })
    );
    // Exactly the limit is not truncated.
    let exact = Machine::default()
        .arg(0, 2)
        .arg(1, 0x5000)
        .memory(0x5000, b"abcdefgh\0");
    assert_eq!(
        args_json(&exact.decode_entry(&plan)),
        json!({"args": {"s": "SHIPPED", "codes": "abcdefgh"}, "unavailable": {}})
    );
}

#[test]
fn the_capture_budget_marks_what_does_not_fit() {
    let limits = PlanLimits {
        max_bytes: 40,
        ..PlanLimits::default()
    };
    let plan = shapes_plan("list_len", &limits);
    let machine = Machine::default()
        .arg(0, 0x1000)
        .memory(0x1000, &node(1, 0x2000))
        .memory(0x2000, &node(2, 0x3000))
        .memory(0x3000, &node(3, 0));
    let decoded = machine.decode_entry(&plan);
    assert_eq!(
        decoded.args[0].1.to_json(),
        json!({"value": 1, "next": {"value": 2, "next": {"ptr": "0x3000"}}})
    );
    assert_eq!(
        decoded.unavailable,
        [(
            "n.next.next".to_owned(),
            "not captured: the probe's 40-byte capture budget (max_serialized_size) is used up"
                .to_owned()
        )]
    );
}

#[test]
fn aggregates_returned_in_registers_and_memory() {
    let limits = PlanLimits::default();
    let plan = shapes_plan("make_pair", &limits);
    let r = Machine::default()
        .reg(0, (-3i32) as u32 as u64 | 0xffff_0000_0000_0000)
        .reg(1, 1 << 40)
        .decode_return(&plan);
    assert_eq!(
        r.value.map(|v| v.to_json()),
        Some(json!({"a": -3, "b": 1u64 << 40}))
    );
    let plan = shapes_plan("make_big", &limits);
    let mut big = Vec::new();
    for v in [100i64, 101, 102, 103] {
        big.extend_from_slice(&v.to_le_bytes());
    }
    let r = Machine::default()
        .reg(0, 0x7000)
        .memory(0x7000, &big)
        .decode_return(&plan);
    assert_eq!(
        r.value,
        Some(Value::Struct(vec![(
            "v".into(),
            Value::Array([100, 101, 102, 103].map(Value::Int).to_vec())
        )]))
    );
}

#[test]
fn output_parameters_are_read_again_at_return() {
    let limits = PlanLimits {
        capture_after: true,
        ..PlanLimits::default()
    };
    let plan = shapes_plan("bump", &limits);
    let pair = |a: i32, b: i64| {
        let mut v = vec![0u8; 16];
        v[..4].copy_from_slice(&a.to_le_bytes());
        v[8..].copy_from_slice(&b.to_le_bytes());
        v
    };
    let entry = Machine::default()
        .arg(0, 0x1000)
        .memory(0x1000, &pair(1, 2));
    let saved = entry.saves(&plan);
    assert_eq!(saved, [0x1000]);
    // At return the registers are gone; the pointer comes from the saved word.
    let mut at_return = Machine::default().memory(0x1000, &pair(2, 3));
    at_return.saved = saved;
    let r = at_return.decode_return(&plan);
    assert_eq!(r.value, None, "bump returns void");
    assert_eq!(
        r.after
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_json()))
            .collect::<Vec<_>>(),
        [("p", json!({"a": 2, "b": 3}))]
    );
    // Without the entry's word (its event was sampled out or lost) nothing is guessed.
    let r = Machine::default().decode_return(&plan);
    assert_eq!((r.after.len(), r.unavailable.len()), (0, 1));
    // Pointers to const are never outputs.
    let plan = shapes_plan("list_len", &limits);
    assert!(plan.entry.saves.is_empty());
}

#[test]
fn without_debug_info_the_argument_registers_are_stored_raw() {
    let plan = compile(None, &[], &PlanLimits::default());
    let mut machine = Machine::default();
    for (n, value) in [u64::MAX, 2, 3, 4, 5, 6].into_iter().enumerate() {
        machine = machine.arg(n, value);
    }
    let why = "no DWARF debug info: stored as raw registers (types unknown); rebuild with -g \
               or install the debug file";
    assert_eq!(
        args_json(&machine.decode_entry(&plan)),
        json!({
            "args": {"rdi": u64::MAX, "rsi": 2, "rdx": 3, "rcx": 4, "r8": 5, "r9": 6},
            "unavailable": {"arguments": why},
        })
    );
    let ret = machine.reg(0, 42).decode_return(&plan);
    assert_eq!(ret.value, Some(Value::UInt(42)));
    assert_eq!(ret.unavailable, [("return".to_owned(), why.to_owned())]);
}
