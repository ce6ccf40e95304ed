//! Every shipped example and the default scripts build, and route what they say they route.

use std::path::Path;

use switchyard::catalog::Catalog;
use switchyard::script::{self, Limits};

use crate::support::*;

fn build_dir(dir: &Path) -> script::Built {
    let catalog_file = dir.join("catalog.json");
    let catalog = if catalog_file.exists() {
        Catalog::load(&catalog_file).unwrap()
    } else {
        Catalog::default()
    };
    let sources = script::load_dir(dir).unwrap();
    assert!(!sources.is_empty(), "{} has no scripts", dir.display());
    script::build(&sources, &catalog, &["web".to_string()], &Limits::default()).unwrap_or_else(
        |errs| {
            panic!(
                "{} does not build:\n{}",
                dir.display(),
                script::error::render_all(&errs)
            )
        },
    )
}

#[test]
fn every_example_builds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        if dir.is_dir()
            && std::fs::read_dir(&dir)
                .unwrap()
                .any(|e| e.unwrap().path().extension().is_some_and(|x| x == "rhai"))
        {
            let built = build_dir(&dir);
            assert!(
                !built.table.routes().is_empty(),
                "{} declares no routes",
                dir.display()
            );
            seen += 1;
        }
    }
    assert!(seen >= 2, "expected the example folders, found {seen}");
}

#[test]
fn catalog_example_routes_only_exposed_services() {
    let built = build_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/catalog"));
    let mut names: Vec<_> = built
        .table
        .routes()
        .iter()
        .map(|r| r.name.clone())
        .collect();
    names.sort();
    assert_eq!(names, vec!["billing", "shop"]);
}

#[tokio::test]
async fn shipped_scripts_answer_on_the_welcome_route() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts");
    let files: Vec<(String, String)> = script::load_dir(&dir)
        .unwrap()
        .into_iter()
        .map(|s| {
            (
                Path::new(&s.name)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                s.text,
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let r = TestRouter::start_with(&refs, |_| {}).await;
    let resp = get(r.web, "localhost:8080", "/").await;
    assert_eq!(resp.status, 200);
    assert!(resp.body.contains("Hello from switchyard"), "{}", resp.body);
    assert_eq!(get(r.web, "localhost", "/health").await.body, "ok\n");
    // The embedded copy is the same text as the folder.
    let embedded = script::embedded_default();
    assert_eq!(
        embedded.len(),
        files.len(),
        "scripts/ and the embedded default differ"
    );
    for (e, (_, text)) in embedded.iter().zip(&files) {
        assert_eq!(&e.text, text);
    }
    r.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// The fenced `rhai` blocks of README.md and docs/*.md

/// What a fenced block's info string says it is: ` ```rhai ` is a whole route script,
/// ` ```rhai,fragment ` a piece of one (only parsed), ` ```rhai,test ` a test file (only parsed)
/// and ` ```rhai,test=DIR ` a test file run with `switchyard test` against the scripts in DIR.
#[derive(Debug, PartialEq)]
enum BlockKind {
    Script,
    Fragment,
    Test(Option<String>),
}

#[derive(Debug)]
struct DocBlock {
    /// `file:line` of the opening fence.
    at: String,
    kind: BlockKind,
    text: String,
}

/// The `rhai` blocks of one Markdown text; `name` is how errors refer to the file.
fn rhai_blocks(name: &str, markdown: &str) -> Vec<DocBlock> {
    let mut blocks = Vec::new();
    let mut lines = markdown.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let Some(info) = line.trim_start().strip_prefix("```") else {
            continue;
        };
        let mut words = info.trim().split(',').map(str::trim);
        let language = words.next().unwrap_or("");
        let at = format!("{name}:{}", i + 1);
        let mut text = String::new();
        let mut closed = false;
        for (_, l) in lines.by_ref() {
            if l.trim() == "```" {
                closed = true;
                break;
            }
            text.push_str(l);
            text.push('\n');
        }
        assert!(closed, "{at}: the code block is never closed");
        if language != "rhai" {
            continue;
        }
        let mut kind = BlockKind::Script;
        for word in words {
            kind = match word {
                "fragment" => BlockKind::Fragment,
                "test" => BlockKind::Test(None),
                _ => match word.strip_prefix("test=") {
                    Some(dir) => BlockKind::Test(Some(dir.to_string())),
                    None => panic!(
                        "{at}: unknown marker {word:?} in ```{info} \
                         (known: fragment, test, test=DIR)"
                    ),
                },
            };
        }
        blocks.push(DocBlock { at, kind, text });
    }
    blocks
}

/// README.md and every docs/*.md, in that order.
fn doc_blocks() -> Vec<DocBlock> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec!["README.md".to_string()];
    let mut docs: Vec<String> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
        .iter()
        .flat_map(|f| rhai_blocks(f, &std::fs::read_to_string(root.join(f)).unwrap()))
        .collect()
}

/// The binary under test, with no `SWITCHYARD_*` variable inherited and `cwd` as its working
/// directory.
fn switchyard_in(cwd: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SWITCHYARD_") {
            cmd.env_remove(key);
        }
    }
    cmd.current_dir(cwd).stdin(std::process::Stdio::null());
    cmd
}

fn run(cmd: &mut std::process::Command) -> Result<(), String> {
    let out = cmd.output().expect("cannot start switchyard");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Checks one block as its marker says; the error names the block's `file:line`.
fn check_block(block: &DocBlock) -> Result<(), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let result = match &block.kind {
        BlockKind::Script => {
            std::fs::write(dir.path().join("10-doc.rhai"), &block.text).unwrap();
            run(switchyard_in(dir.path())
                .arg("check")
                .arg("--scripts")
                .arg(dir.path()))
            .map_err(|e| {
                format!(
                    "does not build as a route script (mark the fence ```rhai,fragment if it \
                     is not a whole script; line N of 10-doc.rhai is the block's line N):\n{e}"
                )
            })
        }
        BlockKind::Test(Some(scripts)) => {
            // Recordings and other data beside the scripts, so relative paths resolve.
            let scripts = root.join(scripts);
            for entry in std::fs::read_dir(&scripts).unwrap() {
                let p = entry.unwrap().path();
                if p.is_file() && p.extension().is_none_or(|x| x != "rhai") {
                    std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
                }
            }
            std::fs::write(dir.path().join("doc.test.rhai"), &block.text).unwrap();
            run(switchyard_in(dir.path())
                .arg("test")
                .arg(dir.path())
                .arg("--scripts")
                .arg(&scripts))
            .map_err(|e| {
                format!(
                    "fails `switchyard test --scripts {}`:\n{e}",
                    scripts.display()
                )
            })
        }
        BlockKind::Fragment | BlockKind::Test(None) => rhai::Engine::new()
            .compile(&block.text)
            .map(|_| ())
            .map_err(|e| format!("does not parse: {e} (lines counted from the block's first)")),
    };
    result.map_err(|e| format!("{}: ```rhai block {e}", block.at))
}

#[test]
fn every_rhai_block_in_readme_and_docs_builds() {
    let blocks = doc_blocks();
    let scripts = blocks
        .iter()
        .filter(|b| b.kind == BlockKind::Script)
        .count();
    assert!(
        scripts >= 5,
        "expected the route scripts of README.md and docs/, found {scripts}"
    );
    assert!(
        blocks
            .iter()
            .any(|b| matches!(b.kind, BlockKind::Test(Some(_)))),
        "expected a test block run with `switchyard test`"
    );
    let failures: Vec<String> = blocks.iter().filter_map(|b| check_block(b).err()).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn a_broken_doc_block_is_reported_with_its_file_and_line() {
    let markdown = "# t\n\n```rhai\nroute(\"r\").rule(path(\"/\")).to(nowhere);\n```\n\n\
                    ```rhai,fragment\nroute(\"r\").to(api);\n```\n\n```sh\nls\n```\n";
    let blocks = rhai_blocks("docs/x.md", markdown);
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[1].kind, BlockKind::Fragment);
    let err = check_block(&blocks[0]).unwrap_err();
    assert!(
        err.starts_with("docs/x.md:3: ```rhai block does not build"),
        "{err}"
    );
    assert!(err.contains("nowhere"), "{err}");
    check_block(&blocks[1]).unwrap();
    let err = check_block(&DocBlock {
        at: "docs/x.md:9".into(),
        kind: BlockKind::Fragment,
        text: "let x = (;\n".into(),
    })
    .unwrap_err();
    assert!(
        err.starts_with("docs/x.md:9: ```rhai block does not parse"),
        "{err}"
    );
}
