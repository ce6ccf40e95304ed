//! docs/flags.md is generated from the flag definitions (`config::flag_reference`): this test
//! fails when they differ. Regenerate with `UPDATE_DOCS=1 cargo test --test it reference`.

const HEADER: &str = "# Flag reference: `switchyard run`\n\n\
Generated from the flag definitions (`config::flag_reference`); do not edit by hand. \
`tests/it/reference.rs` checks it; regenerate with \
`UPDATE_DOCS=1 cargo test --test it reference`. Every flag can also be set by its \
environment variable; a flag beats its variable, which beats the `--config` file, which beats \
the default. `check`, `catalog`, `replay`, `repl` and `test` take the same `--config`, \
`--scripts`, `--catalog`, `--docker*` and `--swarm*` flags.\n\n";

#[test]
fn the_flag_reference_in_the_docs_is_generated_from_the_flags() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/flags.md");
    let want = format!("{HEADER}{}", switchyard::config::flag_reference());
    let have = std::fs::read_to_string(path).unwrap_or_default();
    if have != want {
        if std::env::var_os("UPDATE_DOCS").is_some() {
            std::fs::write(path, &want).expect("writing docs/flags.md");
            return;
        }
        panic!(
            "docs/flags.md is out of date with the flags: run `UPDATE_DOCS=1 cargo test --test it reference`"
        );
    }
    for flag in [
        "`--entrypoint`",
        "`--docker.endpoint`",
        "`--swarm.refresh`",
        "`--admin`",
    ] {
        assert!(want.contains(flag), "{flag} missing from the reference");
    }
}
