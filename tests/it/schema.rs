//! `switchyard schema config|catalog`: JSON Schemas an editor or a CI step can check files with,
//! checked here by PyPI's `jsonschema` (Draft 2020-12) against every TOML block of the manual and
//! the example catalog, and shown to refuse what the router refuses (an unknown key, a list
//! where a table goes).

use std::path::Path;
use std::process::Command;

use crate::support::tools_python;

fn schema(of: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["schema", of])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Validates each document (`.json` or `.toml` text) against `schema`; the errors, one line per
/// invalid document (`NAME: message`), empty when all are valid.
fn validate(schema: &str, docs: &[(String, String)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("schema.json"), schema).unwrap();
    let mut names = Vec::new();
    for (i, (name, text)) in docs.iter().enumerate() {
        let ext = if name.ends_with(".toml") {
            "toml"
        } else {
            "json"
        };
        let file = dir.path().join(format!("{i}.{ext}"));
        std::fs::write(&file, text).unwrap();
        names.push((name.clone(), file));
    }
    let script = r#"
import json, sys, tomllib, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
v = jsonschema.Draft202012Validator(schema)
for name, path in zip(sys.argv[2::2], sys.argv[3::2]):
    doc = tomllib.load(open(path, "rb")) if path.endswith(".toml") else json.load(open(path))
    errs = sorted(v.iter_errors(doc), key=lambda e: list(e.path))
    if errs:
        print(f"{name}: {errs[0].message}")
"#;
    let mut cmd = Command::new(tools_python());
    cmd.args(["-c", script]).arg(dir.path().join("schema.json"));
    for (name, file) in &names {
        cmd.arg(name).arg(file);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The fenced ```toml blocks of docs/*.md, named `FILE:LINE`.
fn docs_toml() -> Vec<(String, String)> {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&docs)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let mut block: Option<(usize, String)> = None;
        for (n, line) in text.lines().enumerate() {
            match &mut block {
                None if line.trim() == "```toml" => block = Some((n + 1, String::new())),
                Some((start, body)) if line.trim() == "```" => {
                    let name = format!("{}:{start}.toml", f.file_name().unwrap().to_string_lossy());
                    out.push((name, std::mem::take(body)));
                    block = None;
                }
                Some((_, body)) => {
                    body.push_str(line);
                    body.push('\n');
                }
                None => {}
            }
        }
    }
    out
}

#[test]
fn the_config_schema_accepts_the_manuals_files_and_refuses_what_the_router_refuses() {
    let schema = schema("config");
    let docs = docs_toml();
    assert!(docs.len() >= 5, "{docs:?}");
    assert_eq!(validate(&schema, &docs), "");
    let bad = vec![
        (
            "unknown.toml".to_string(),
            "scripts = \"s\"\nscript_dir = \"x\"\n".to_string(),
        ),
        (
            "provider.toml".to_string(),
            "[providers.docker]\nexposed_by_default = \"maybe\"\n".to_string(),
        ),
    ];
    let errors = validate(&schema, &bad);
    assert!(errors.contains("unknown.toml:"), "{errors}");
    assert!(errors.contains("provider.toml:"), "{errors}");
    // The router refuses the same files.
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in &bad {
        let file = dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["check", "--config"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{name} accepted by check");
    }
}

#[test]
fn the_catalog_schema_accepts_the_example_catalog_and_refuses_unknown_fields() {
    let schema = schema("catalog");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/catalog/catalog.json");
    let docs = vec![
        (
            "examples/catalog/catalog.json".to_string(),
            std::fs::read_to_string(example).unwrap(),
        ),
        (
            "typo.json".to_string(),
            r#"[{"name": "a", "server": ["127.0.0.1:80"]}]"#.to_string(),
        ),
    ];
    let errors = validate(&schema, &docs);
    assert!(
        !errors.contains("examples/catalog/catalog.json"),
        "{errors}"
    );
    assert!(errors.contains("typo.json:"), "{errors}");
}
