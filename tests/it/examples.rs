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
