//! `canonical::canonical_path` and `recheck_rewritten`: the invariants `src/canonical.rs`
//! documents. The first input byte picks the `PathOptions` (one bit per flag), the rest is the
//! path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::canonical::{canonical_path, recheck_rewritten, PathOptions};

fn options(bits: u8) -> PathOptions {
    PathOptions {
        sanitize: bits & 1 == 0, // mostly on: sanitising is the interesting case
        merge_slashes: bits & 2 != 0,
        allow_encoded_slash: bits & 4 != 0,
        allow_encoded_backslash: bits & 8 != 0,
        allow_encoded_null: bits & 16 != 0,
        allow_above_root: bits & 32 != 0,
    }
}

/// A segment that is `.` or `..`, also when spelled with `%2e` or carrying `;` parameters.
fn is_dot_segment(seg: &str) -> bool {
    let name = seg.split(';').next().unwrap_or(seg);
    let name = name.to_ascii_lowercase().replace("%2e", ".");
    name == "." || name == ".."
}

fuzz_target!(|data: &[u8]| {
    let Some((&bits, rest)) = data.split_first() else {
        return;
    };
    let opts = options(bits);
    let path = String::from_utf8_lossy(rest);

    let _ = recheck_rewritten(&path, &opts);

    let Ok(out) = canonical_path(&path, &opts) else {
        return;
    };
    let out: &str = &out;
    assert!(
        out.starts_with('/') || out == "*",
        "output {out:?} of {path:?} ({opts:?}) does not start with /"
    );
    if opts.sanitize && out != "*" {
        assert!(
            !out.split('/').any(is_dot_segment),
            "output {out:?} of {path:?} ({opts:?}) has a dot segment"
        );
    }
    match canonical_path(out, &opts) {
        Ok(again) => assert_eq!(
            again, out,
            "not a fixed point: {path:?} -> {out:?} -> {again:?} ({opts:?})"
        ),
        Err(e) => panic!("own output refused: {path:?} -> {out:?} -> {e:?} ({opts:?})"),
    }
    // A canonical path is a valid rewrite result: the re-check passes it through unchanged.
    match recheck_rewritten(out, &opts) {
        Ok(again) => assert_eq!(
            again, out,
            "recheck changed {out:?} (from {path:?}) ({opts:?})"
        ),
        Err(e) => panic!("recheck refused {out:?} (from {path:?}): {e:?} ({opts:?})"),
    }
});
