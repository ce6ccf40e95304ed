//! What operators hand the TLS and ACME code as text: certificate/key PEM (`certs::load` through
//! files: the chain and key parsers and the checks), entrypoint TLS options and certificate
//! resolver options (`set` key by key). None may panic; a certificate that loads must name its
//! source and have a key that belongs to it (checked by `from_der`).
//! The first byte picks what the rest is: 0 → PEM chain + key (split at the first NUL),
//! 1 → `tls.KEY=VALUE` lines, 2 → resolver `KEY=VALUE` lines.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::acme::ResolverConfig;
use switchyard::tls::{CertFiles, TlsOptions};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    match kind % 3 {
        0 => {
            let (cert, key) = match rest.iter().position(|b| *b == 0) {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &b""[..]),
            };
            let dir = std::env::temp_dir().join(format!("switchyard-fuzz-tls-{}", std::process::id()));
            let _ = std::fs::create_dir_all(&dir);
            let files = CertFiles {
                cert: dir.join("c.pem"),
                key: dir.join("k.pem"),
            };
            if std::fs::write(&files.cert, cert).is_err() || std::fs::write(&files.key, key).is_err() {
                return;
            }
            if let Ok(c) = switchyard::tls::certs::load(&files) {
                assert!(c.source.ends_with("c.pem"));
                assert!(c.key.keys_match().is_ok());
            }
        }
        1 => {
            let text = String::from_utf8_lossy(rest);
            let mut o = TlsOptions::default();
            for line in text.lines() {
                if let Some((k, v)) = line.split_once('=') {
                    let _ = o.set(k, v);
                }
            }
            let _ = o.check();
        }
        _ => {
            let text = String::from_utf8_lossy(rest);
            let mut r = ResolverConfig::new("fuzz");
            for line in text.lines() {
                if let Some((k, v)) = line.split_once('=') {
                    let _ = r.set(k, v);
                }
            }
            let _ = r.check(&[("web".to_string(), false), ("websecure".to_string(), true)]);
        }
    }
});
