//! `recording::format::parse` (JSON lines and HAR) and `RecordedRequest::to_dry`: no panic on any
//! text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::recording::format::parse;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let rec = parse(text);
    for req in &rec.requests {
        let _ = req.to_dry(None);
        let _ = req.line();
        let _ = req.system_time();
    }
    for e in &rec.errors {
        let _ = e.to_string();
    }
});
