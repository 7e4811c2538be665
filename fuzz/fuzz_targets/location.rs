//! Hostile DWARF location expressions: parsing and symbolic evaluation never panic.
#![no_main]

use chronicle_symbols::location::{CfaRule, LocOp, LocationSpec, Site, evaluate, parse_expression, select};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let (head, body) = data.split_at(4);
    let encoding = gimli::Encoding {
        format: gimli::Format::Dwarf32,
        version: 5,
        address_size: 8,
    };
    let split = usize::from(head[0]) % (body.len() + 1);
    let (frame, expr) = body.split_at(split);
    let parse = |bytes: &[u8]| {
        parse_expression(
            gimli::Expression(gimli::EndianSlice::new(bytes, gimli::LittleEndian)),
            encoding,
        )
    };
    let frame_base = parse(frame);
    let ops = parse(expr);
    let site = Site {
        pc: u64::from(head[1]),
        at_entry: head[2] & 1 == 1,
        cfa: (head[2] & 2 == 2).then_some(CfaRule {
            reg: head[3] % 16,
            offset: i64::from(head[3]) - 128,
        }),
        frame_base: Some(&frame_base),
    };
    let size = u64::from(head[3]);
    let _ = evaluate(&ops, size, &site);
    let list = LocationSpec::List(vec![(0..u64::from(head[1]), ops.clone()), (5..3, vec![LocOp::Plus])]);
    if let Ok(chosen) = select(&list, u64::from(head[2])) {
        let _ = evaluate(chosen, size, &site);
    }
});
