//! Hostile `chronicle ask` questions: interpreting them never panics (times, counts, build
//! prefixes, function names with any characters).
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use chronicle::ask::interpret;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // The first line names recorded functions, the rest is the question.
    let (names, question) = text.split_once('\n').unwrap_or(("", &text));
    let known: Vec<String> = names.split(',').map(str::to_owned).collect();
    let now = UNIX_EPOCH + Duration::from_secs(1_795_721_401);
    let _ = interpret(question, &known, now);
});
