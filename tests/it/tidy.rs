//! The dependency rules of ARCHITECTURE.md, checked against the source: a file under a listed
//! path never names (`crate::…`, `use crate::{…}` groups included) a module its rule forbids,
//! and `rhai` is named only under `src/script/`. Rules the code does not meet yet are listed in
//! the table's third column; the test fails when one of them is met (so the list shrinks) and
//! when a new breach appears.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// `(path prefix, forbidden crate paths, forbidden but still present)` from ARCHITECTURE.md's
/// "Dependency rules" table.
fn rules() -> Vec<(String, Vec<String>, Vec<String>)> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("ARCHITECTURE.md")).unwrap();
    let section = text
        .split("## Dependency rules")
        .nth(1)
        .expect("ARCHITECTURE.md has a Dependency rules section");
    let ticked = |cell: &str| -> Vec<String> {
        cell.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    };
    section
        .lines()
        .take_while(|l| !l.starts_with("## "))
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let path = ticked(cells[1]).remove(0);
            (path, ticked(cells[2]), ticked(cells[3]))
        })
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Source without comments and without the `#[cfg(test)]` module (tests may import anything).
fn code_of(text: &str) -> String {
    let body = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    body.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::a::b…` path a file names, with `{…}` groups expanded.
fn crate_paths(code: &str) -> BTreeSet<String> {
    fn expand(prefix: &str, rest: &str, out: &mut BTreeSet<String>) {
        // `rest` starts right after `prefix::`.
        if let Some(inner) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item = String::new();
            for c in inner.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        add(prefix, item.trim(), out);
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            add(prefix, item.trim(), out);
        } else {
            let path: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let path = path.trim_end_matches(':');
            if !path.is_empty() {
                out.insert(format!("{prefix}::{path}"));
            }
            let after = &rest[path.len()..];
            if let Some(group) = after.strip_prefix("::{") {
                expand(&format!("{prefix}::{path}"), &format!("{{{group}"), out);
            }
        }
    }
    fn add(prefix: &str, item: &str, out: &mut BTreeSet<String>) {
        if item.is_empty() || item == "self" {
            out.insert(prefix.to_string());
            return;
        }
        match item.find("::{") {
            Some(i) => expand(&format!("{prefix}::{}", &item[..i]), &item[i + 2..], out),
            None => {
                let path = item.split(" as ").next().unwrap_or(item).trim();
                out.insert(format!("{prefix}::{path}"));
            }
        }
    }
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let before = code[..i].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue; // `$crate::` or an identifier ending in `crate`
        }
        expand("crate", &code[i + "crate::".len()..], &mut out);
    }
    out
}

fn names(paths: &BTreeSet<String>, forbidden: &str) -> bool {
    paths
        .iter()
        .any(|p| p == forbidden || p.starts_with(&format!("{forbidden}::")))
}

#[test]
fn modules_import_only_what_architecture_allows() {
    let rules = rules();
    assert!(rules.len() >= 8, "too few rules read: {rules:?}");
    let mut files = Vec::new();
    rust_files(&Path::new(ROOT).join("src"), &mut files);
    let mut breaches = Vec::new();
    let mut met = Vec::new();
    for (prefix, forbidden, pending) in &rules {
        let covered: Vec<&PathBuf> = files
            .iter()
            .filter(|f| {
                f.strip_prefix(ROOT)
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(prefix.as_str())
            })
            .collect();
        assert!(!covered.is_empty(), "rule for {prefix} covers no file");
        for target in forbidden {
            let mut found = Vec::new();
            for f in &covered {
                let paths = crate_paths(&code_of(&std::fs::read_to_string(f).unwrap()));
                if names(&paths, target) {
                    found.push(f.strip_prefix(ROOT).unwrap().display().to_string());
                }
            }
            let allowed = pending.contains(target);
            if !found.is_empty() && !allowed {
                breaches.push(format!("{prefix} must never import {target}: {found:?}"));
            }
            if found.is_empty() && allowed {
                met.push(format!(
                    "{prefix} no longer imports {target}: remove it from the third column"
                ));
            }
        }
    }
    assert!(breaches.is_empty(), "{breaches:#?}");
    assert!(met.is_empty(), "{met:#?}");
}

#[test]
fn rhai_only_in_the_script_module() {
    let mut files = Vec::new();
    rust_files(&Path::new(ROOT).join("src"), &mut files);
    let outside: Vec<String> = files
        .iter()
        .map(|f| f.strip_prefix(ROOT).unwrap().display().to_string())
        .filter(|f| !f.starts_with("src/script/"))
        .filter(|f| {
            let code = code_of(&std::fs::read_to_string(Path::new(ROOT).join(f)).unwrap());
            code.contains("rhai::") || code.contains("use rhai")
        })
        .collect();
    assert!(
        outside.is_empty(),
        "rhai named outside src/script/: {outside:?}"
    );
}

#[test]
fn the_path_reader_expands_groups() {
    let p = crate_paths(
        "use crate::{a::{b, c::D}, e as f};\nlet x = crate::g::h::i(1); $crate::no::thing",
    );
    let want: BTreeSet<String> = [
        "crate::a::b",
        "crate::a::c::D",
        "crate::e",
        "crate::g::h::i",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(p, want);
}
