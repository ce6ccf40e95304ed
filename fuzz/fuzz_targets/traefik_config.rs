//! Traefik's configuration as operators hand it over: static configuration as a command line
//! (`source::parse_args` then `translate`), a `traefik.yml` / `traefik.toml` document (parsed,
//! flattened, translated), and dynamic configuration text with `{{ env }}` templates. None may
//! panic; a translation that succeeds must produce flags that start with `--`.
//! The first byte picks what the rest is: 0 → command line (NUL-separated arguments),
//! 1 → YAML, 2 → TOML, 3 → dynamic text through the template expander then YAML.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use switchyard::providers::traefik_file::expand_templates;
use switchyard::traefik::{source, translate};

fn check(pairs: &[source::Pair]) {
    if let Ok(t) = translate::translate(pairs) {
        assert!(t.args.iter().all(|a| a.starts_with("--")), "{:?}", t.args);
    }
}

fn document(path: &str, text: &str) {
    if let Ok(v) = source::parse_document(Path::new(path), text) {
        let mut pairs = Vec::new();
        source::flatten("", &v, &mut pairs);
        check(&pairs);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match kind % 4 {
        0 => {
            let args: Vec<String> = text.split('\0').map(String::from).collect();
            if let Ok(pairs) = source::parse_args(&args) {
                check(&pairs);
            }
        }
        1 => document("traefik.yml", text),
        2 => document("traefik.toml", text),
        _ => {
            let env = |n: &str| (n == "HOST").then(|| "a.test".to_string());
            if let Ok(t) = expand_templates(Path::new("dynamic.yml"), text, &env) {
                document("dynamic.yml", &t);
            }
        }
    }
});
