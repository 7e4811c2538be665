//! Hostile `chronicle.toml` texts: parsing and validation return an error or a config, and
//! never panic (line/column arithmetic on multi-byte text, regexes, numbers out of range).
#![no_main]

use chronicle::config::CaptureConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(error) = CaptureConfig::from_toml_str(text, "fuzz.toml") {
        // Rendering the message walks the positions it names.
        let _ = error.to_string();
    }
});
