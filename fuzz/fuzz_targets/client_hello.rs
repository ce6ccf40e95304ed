//! `proxy::hello::parse`: the ClientHello reader TCP routes are chosen by. Never panics; a
//! complete hello's SNI is lower-case without a trailing dot; adding bytes after a complete
//! hello does not change what it says.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::proxy::hello::{parse, HelloParse};

fuzz_target!(|data: &[u8]| {
    if let HelloParse::Complete(h) = parse(data) {
        if let Some(sni) = &h.sni {
            assert_eq!(sni, &sni.to_ascii_lowercase());
            assert!(!sni.ends_with('.'));
        }
        let mut more = data.to_vec();
        more.extend_from_slice(&[0x17, 3, 3, 0, 1, 0]);
        if let HelloParse::Complete(again) = parse(&more) {
            assert_eq!(again, h);
        }
    }
});
