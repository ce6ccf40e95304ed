//! Providers: where the catalog comes from. Each provider sends full catalog snapshots to the
//! control loop (`catalog::ProviderReport` on a `ProviderSender`); none of them touches the route table.
//!
//! Today: `file` (a JSON catalog file, watched for changes) and `docker` (containers of a Docker
//! engine, watched through its event stream; `constraints` is its label filter language) and
//! `swarm` (services of a Docker Swarm, polled and nudged by service/node events).

pub mod constraints;
pub mod docker;
mod engine;
pub mod file;
pub mod labels;
pub mod swarm;
pub mod traefik_file;
mod watch;

use crate::catalog::Catalog;
use crate::config::Config;

/// What the configured providers see right now, merged in the control loop's order (provider
/// name order: docker, file, swarm): for `check` and `catalog`, which serve nothing. Blocking.
pub fn snapshot_now(cfg: &Config) -> anyhow::Result<Catalog> {
    use anyhow::Context;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime for the providers")?;
    let mut all = Catalog::default();
    let mut add = |provider: &str, found: Catalog| {
        all.entries.extend(found.entries);
        all.problems.extend(
            found
                .problems
                .into_iter()
                .map(|m| format!("{provider}: {m}")),
        );
    };
    if let Some(d) = &cfg.docker {
        add(
            "docker",
            rt.block_on(async {
                docker::snapshot(&docker::connect(&d.endpoint, d.tls.as_ref()).await?, d).await
            })?,
        );
    }
    if let Some(p) = &cfg.catalog {
        add("file", Catalog::load(p)?);
    }
    if let Some(p) = &cfg.dynamic_config {
        add(
            traefik_file::PROVIDER,
            traefik_file::load(p).map_err(anyhow::Error::msg)?,
        );
    }
    if let Some(s) = &cfg.swarm {
        add(
            "swarm",
            rt.block_on(async {
                swarm::snapshot(&docker::connect(&s.endpoint, s.tls.as_ref()).await?, s).await
            })?,
        );
    }
    Ok(all)
}
