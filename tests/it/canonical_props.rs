//! Property tests for `canonical::canonical_path` (the invariants `src/canonical.rs` documents):
//! idempotence under every option set, never climbing above `/`, agreement with an independent
//! reference (decode unreserved escapes, RFC 3986 §5.2.4 `remove_dot_segments`, merge slashes),
//! and that a protected prefix catches every spelling of a path under it.

use std::borrow::Cow;

use proptest::prelude::*;
use proptest::test_runner::Config;
use switchyard::canonical::{canonical_path, PathError, PathOptions};

/// Modest case counts keep the suite quick; no regression files are written into the tree.
fn config() -> Config {
    Config {
        cases: 512,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Every combination of the six `PathOptions` booleans.
fn all_options() -> impl Iterator<Item = PathOptions> {
    (0u8..64).map(|bits| PathOptions {
        sanitize: bits & 1 != 0,
        merge_slashes: bits & 2 != 0,
        allow_encoded_slash: bits & 4 != 0,
        allow_encoded_backslash: bits & 8 != 0,
        allow_encoded_null: bits & 16 != 0,
        allow_above_root: bits & 32 != 0,
    })
}

/// One path segment: normal names, dot segments (also percent-encoded), empty segments, escapes
/// of unreserved and reserved characters, `;` parameters.
fn segment() -> impl Strategy<Value = String> {
    let base = prop_oneof![
        4 => prop::sample::select(vec!["a", "b", "api", "admin", "x.y", "..a", "a..", "v1"]),
        2 => Just("."),
        2 => Just(".."),
        1 => Just("%2e"),
        1 => Just("%2E%2e"),
        1 => Just(".%2e"),
        1 => Just("%2E."),
        2 => Just(""),
        1 => Just("%61"),
        1 => Just("%7E"),
        1 => Just("b%62%7e"),
        1 => Just("%3F"),
        1 => Just("%20"),
        1 => Just("a%25b"),
        1 => Just("%3f%2c"),
    ];
    (base, prop::bool::weighted(0.1)).prop_map(|(s, params)| {
        if params {
            format!("{s};x")
        } else {
            s.to_string()
        }
    })
}

/// `/` + segments joined by `/`, sometimes with a trailing slash.
fn path_from(seg: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    (prop::collection::vec(seg, 0..8), any::<bool>()).prop_map(|(segs, trailing)| {
        let mut p = format!("/{}", segs.join("/"));
        if trailing && !p.ends_with('/') {
            p.push('/');
        }
        p
    })
}

fn path() -> impl Strategy<Value = String> {
    path_from(segment())
}

/// The mix above plus what the `allow_*` options are about (encoded `/`, `\`, NUL, a raw `\`).
fn exotic_path() -> impl Strategy<Value = String> {
    let seg = prop_oneof![
        8 => segment(),
        1 => prop::sample::select(vec!["a%2Fb", "%2f", "%5c", "a\\b", "%00", "%5C..", "%2F%2e%2e"])
            .prop_map(str::to_string),
    ];
    path_from(seg)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Decodes `%XX` of unreserved characters and upper-cases the hex digits of every other escape.
/// (The generated paths have only well-formed escapes.)
fn decode_unreserved(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let hex = &rest[i + 1..i + 3];
        let byte = u8::from_str_radix(hex, 16).expect("generated escapes are well-formed");
        if is_unreserved(byte) {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push_str(&hex.to_ascii_uppercase());
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    out
}

/// What resolving the dot segments of a path met.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Resolved {
    /// A `..` found nothing left to remove (the path climbs above `/`; the RFC just drops it).
    climbed: bool,
    /// A `..` removed an empty segment (`/a//..` is `/a/`): see `agrees_with_the_reference`.
    popped_empty: bool,
}

/// Removes the last segment and its preceding `/` from `output`, noting what it removed.
fn pop_segment(output: &mut String, seen: &mut Resolved) {
    match output.rfind('/') {
        Some(i) => {
            seen.popped_empty |= i + 1 == output.len();
            output.truncate(i);
        }
        None => seen.climbed = true,
    }
}

/// RFC 3986 §5.2.4 `remove_dot_segments`, written from the RFC's steps A–E.
fn remove_dot_segments(path: &str) -> (String, Resolved) {
    let mut input = path.to_string();
    let mut output = String::new();
    let mut seen = Resolved::default();
    while !input.is_empty() {
        if input.starts_with("../") {
            input.replace_range(..3, "");
        } else if input.starts_with("./") {
            input.replace_range(..2, "");
        } else if input.starts_with("/./") {
            input.replace_range(..3, "/");
        } else if input == "/." {
            input = "/".to_string();
        } else if input.starts_with("/../") {
            input.replace_range(..4, "/");
            pop_segment(&mut output, &mut seen);
        } else if input == "/.." {
            input = "/".to_string();
            pop_segment(&mut output, &mut seen);
        } else if input == "." || input == ".." {
            input.clear();
        } else {
            let start = usize::from(input.starts_with('/'));
            let end = input[start..].find('/').map_or(input.len(), |i| i + start);
            output.push_str(&input[..end]);
            input.replace_range(..end, "");
        }
    }
    (output, seen)
}

fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

/// The reference canonical form: decode, resolve dot segments, then merge slashes if asked.
fn reference(path: &str, merge: bool) -> (String, Resolved) {
    let (resolved, seen) = remove_dot_segments(&decode_unreserved(path));
    let out = if merge {
        merge_slashes(&resolved)
    } else {
        resolved
    };
    (out, seen)
}

/// A segment that is `.` or `..` (also with `%2e` or `;` parameters).
fn is_dot_segment(seg: &str) -> bool {
    let name = seg.split(';').next().unwrap_or(seg);
    let name = name.to_ascii_lowercase().replace("%2e", ".");
    name == "." || name == ".."
}

/// Whether some segment of `path` is a dot segment with `;` parameters (refused on its own).
fn has_dot_segment_params(path: &str) -> bool {
    decode_unreserved(path)
        .split('/')
        .any(|seg| seg.contains(';') && is_dot_segment(seg))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn idempotent_under_every_option_set(p in exotic_path()) {
        for opts in all_options() {
            if let Ok(c) = canonical_path(&p, &opts) {
                let again = canonical_path(&c, &opts);
                prop_assert_eq!(
                    again.as_deref(),
                    Ok(&*c),
                    "{:?} -> {:?} is not a fixed point under {:?}",
                    p,
                    c,
                    opts
                );
                prop_assert!(
                    matches!(canonical_path(&c, &opts), Ok(Cow::Borrowed(_))),
                    "canonical {:?} is not borrowed the second time ({:?})",
                    c,
                    opts
                );
            }
        }
    }

    #[test]
    fn never_climbs_above_root(p in path()) {
        for opts in all_options().filter(|o| o.sanitize) {
            if let Ok(c) = canonical_path(&p, &opts) {
                prop_assert!(c.starts_with('/'), "{:?} -> {:?}", p, c);
                prop_assert!(
                    !c.split('/').any(is_dot_segment),
                    "{:?} -> {:?} keeps a dot segment ({:?})",
                    p,
                    c,
                    opts
                );
            }
        }
        if reference(&p, true).1.climbed {
            let got = canonical_path(&p, &PathOptions::default());
            if has_dot_segment_params(&p) {
                // Whichever the scan meets first.
                prop_assert!(
                    matches!(got, Err(PathError::AboveRoot | PathError::DotSegmentParams)),
                    "{:?} climbs above / but gave {:?}",
                    p,
                    got
                );
            } else {
                prop_assert_eq!(got, Err(PathError::AboveRoot), "{:?} climbs above /", p);
            }
        }
    }

    /// With merge_slashes, canonical_path drops empty segments while it resolves dot segments
    /// (nginx's order), so a `..` after `//` removes the segment before the slashes: `/a//..` is
    /// `/`, where the reference (RFC 3986, then merging) gives `/a/`, as would a backend that
    /// resolves dot segments but does not merge slashes. That case is left to
    /// `merge_slashes_then_dot_segments` (ignored until it is decided); every other path must
    /// agree.
    #[test]
    fn agrees_with_the_reference(p in path()) {
        for opts in all_options().filter(|o| o.sanitize) {
            if let Ok(c) = canonical_path(&p, &opts) {
                let (want, seen) = reference(&p, opts.merge_slashes);
                if opts.merge_slashes && seen.popped_empty {
                    continue;
                }
                prop_assert_eq!(
                    &*c,
                    want.as_str(),
                    "{:?}: canonical_path and the reference differ under {:?}",
                    p,
                    opts
                );
            }
        }
    }

    #[test]
    fn protected_prefix_catches_every_spelling(spelling in admin_spelling()) {
        let (p, uses_double_slash) = spelling;
        for opts in all_options().filter(|o| o.sanitize) {
            // Without merge_slashes `//admin` is a different path by design.
            if uses_double_slash && !opts.merge_slashes {
                continue;
            }
            if let Ok(c) = canonical_path(&p, &opts) {
                prop_assert!(
                    c == "/admin" || c.starts_with("/admin/"),
                    "{:?} is a path under /admin but canonicalises to {:?} ({:?})",
                    p,
                    c,
                    opts
                );
            }
        }
    }
}

/// Noise that leaves the path it is inserted in unchanged: `./`, `x/../`, `%2e` dot segments and
/// (only with merge_slashes) an extra slash. Returns the text and whether it is a slash.
fn noise() -> impl Strategy<Value = (&'static str, bool)> {
    prop_oneof![
        Just(("./", false)),
        Just(("%2e/", false)),
        Just(("%2E/", false)),
        Just(("x/../", false)),
        Just(("x/%2e%2e/", false)),
        Just(("x/.%2E/", false)),
        Just(("%78/%2E./", false)),
        Just(("/", true)),
    ]
}

/// `name` with each letter possibly percent-encoded (upper- or lower-case hex).
fn escaped(name: &'static str) -> impl Strategy<Value = String> {
    prop::collection::vec((any::<bool>(), any::<bool>()), name.len()).prop_map(move |choices| {
        name.chars()
            .zip(choices)
            .map(|(c, (escape, lower))| match (escape, lower) {
                (false, _) => c.to_string(),
                (true, false) => format!("%{:02X}", u32::from(c)),
                (true, true) => format!("%{:02x}", u32::from(c)),
            })
            .collect()
    })
}

/// A spelling of `/admin/<rest>`: `admin` with escaped letters, noise before every segment and at
/// the end, rest segments spelled with escapes too. Also says whether it has an extra slash.
fn admin_spelling() -> impl Strategy<Value = (String, bool)> {
    let rest = prop::collection::vec(
        prop::sample::select(vec!["users", "x", "a.b", "v1", "~me"]),
        0..4,
    )
    .prop_flat_map(|names| names.into_iter().map(escaped).collect::<Vec<_>>());
    let noises = || prop::collection::vec(noise(), 0..3);
    (
        noises(),
        escaped("admin"),
        rest,
        prop::collection::vec(noises(), 4),
        noises(),
        any::<bool>(),
    )
        .prop_map(|(lead, admin, rest, between, tail, trailing)| {
            let mut double = false;
            let mut p = String::from("/");
            let mut add_noise = |p: &mut String, items: &[(&str, bool)]| {
                for (text, slash) in items {
                    p.push_str(text);
                    double |= *slash;
                }
            };
            add_noise(&mut p, &lead);
            p.push_str(&admin);
            for (seg, n) in rest.iter().zip(&between) {
                p.push('/');
                add_noise(&mut p, n);
                p.push_str(seg);
            }
            if trailing || !tail.is_empty() {
                p.push('/');
                add_noise(&mut p, &tail);
            }
            (p, double)
        })
}

#[test]
fn reference_follows_the_rfc_examples() {
    // RFC 3986 §5.2.4's own examples.
    assert_eq!(remove_dot_segments("/a/b/c/./../../g").0, "/a/g");
    assert_eq!(remove_dot_segments("mid/content=5/../6").0, "mid/6");
    assert_eq!(
        reference("/%61/%2e%2E/b%7e/./", true),
        ("/b~/".to_string(), Resolved::default())
    );
    assert!(reference("/a/../..", true).1.climbed);
    assert!(reference("/a//..", true).1.popped_empty);
    assert!(!reference("/a/b/..", true).1.popped_empty);
    assert_eq!(reference("//a", true).0, "/a");
    assert_eq!(reference("//a", false).0, "//a");
}

/// The one disagreement `agrees_with_the_reference` skips: under merge_slashes, a `..` after an
/// empty segment. The reference (and a backend that resolves `..` without merging slashes) stays
/// inside `/a`; canonical_path answers `/`.
#[test]
#[ignore = "canonical_path merges slashes before resolving `..` (nginx order): /a//.. is /, not /a/"]
fn merge_slashes_then_dot_segments() {
    for (p, want) in [("/a//..", "/a/"), ("/admin//../x", "/admin/x")] {
        assert_eq!(reference(p, true).0, want);
        assert_eq!(
            canonical_path(p, &PathOptions::default()).as_deref(),
            Ok(want),
            "{p}"
        );
    }
}
