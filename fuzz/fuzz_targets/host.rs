//! `canonical::parse_host`: no panic; an accepted host is lowercase, has no `:` outside its
//! brackets, and `host[:port]` parses back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::canonical::parse_host;

fuzz_target!(|data: &[u8]| {
    let Ok(hp) = parse_host(data) else {
        return;
    };
    let host = hp.host.as_str();
    assert!(!host.is_empty(), "empty host from {data:?}");
    assert_eq!(
        host,
        host.to_ascii_lowercase(),
        "host {host:?} from {data:?} is not lowercase"
    );
    assert!(
        !host.chars().any(|c| c.is_uppercase()),
        "host {host:?} from {data:?} is not lowercase"
    );
    let outside_brackets = match host.strip_prefix('[') {
        Some(inner) => {
            let (inside, after) = inner
                .split_once(']')
                .unwrap_or_else(|| panic!("unclosed bracket in {host:?} from {data:?}"));
            assert!(!inside.contains('['), "nested bracket in {host:?}");
            after
        }
        None => host,
    };
    assert!(
        !outside_brackets.contains(':'),
        "':' outside brackets in {host:?} from {data:?}"
    );
    assert!(
        !outside_brackets.contains(']'),
        "stray ']' in {host:?} from {data:?}"
    );
    let spelled = match hp.port {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    match parse_host(spelled.as_bytes()) {
        Ok(again) => assert_eq!(
            again, hp,
            "{spelled:?} re-parses differently (from {data:?})"
        ),
        Err(e) => panic!("{spelled:?} (from {data:?}) does not re-parse: {e:?}"),
    }
});
