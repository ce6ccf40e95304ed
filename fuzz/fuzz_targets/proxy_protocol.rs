//! `proxy::proxy_protocol::parse`: never panics; a header it accepts fits in the input and is
//! at most `MAX_HEADER` bytes; an input it calls incomplete stays incomplete or becomes
//! something else only with more bytes (every prefix of a complete header is incomplete).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::proxy::proxy_protocol::{parse, Parsed, MAX_HEADER};

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Parsed::Header { len, .. } => {
            assert!(len <= data.len(), "header of {len} bytes in {} bytes", data.len());
            assert!(len <= MAX_HEADER + 16 + 65_535);
            if let Some(head) = data.get(..len) {
                // The header alone parses the same.
                assert!(matches!(parse(head), Parsed::Header { len: l, .. } if l == len));
            }
        }
        Parsed::Incomplete | Parsed::Absent | Parsed::Invalid(_) => {}
    }
});
