//! `routing::rule::parse_rule` in both syntaxes: no panic; an error's column lies within
//! `1..=chars + 1`; an accepted rule prints.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::routing::rule::{parse_rule, RuleSyntax};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let chars = text.chars().count();
    for syntax in [RuleSyntax::V3, RuleSyntax::V2] {
        match parse_rule(text, syntax) {
            Ok(m) => {
                let _ = m.to_string();
            }
            Err(e) => assert!(
                (1..=chars + 1).contains(&e.column),
                "column {} outside 1..={} for {text:?} ({syntax:?}): {}",
                e.column,
                chars + 1,
                e.message
            ),
        }
    }
});
