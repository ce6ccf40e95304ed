//! Providers: where the catalog comes from. Each provider sends full catalog snapshots to the
//! control loop (`Trigger::Catalog`); none of them touches the route table.
//!
//! Today: `file` (a JSON catalog file, watched for changes) and `docker` (containers of a Docker
//! engine, watched through its event stream; `constraints` is its label filter language) and
//! `swarm` (services of a Docker Swarm, polled and nudged by service/node events).

pub mod constraints;
pub mod docker;
pub mod file;
pub mod swarm;

use crate::catalog::Catalog;
use crate::config::Config;

/// What the configured providers see right now, merged in the control loop's order (provider
/// name order: docker, file, swarm): for `check` and `catalog`, which serve nothing. Blocking.
pub fn snapshot_now(cfg: &Config) -> anyhow::Result<Catalog> {
    use anyhow::Context;
    let mut all = Catalog::default();
    if let Some(d) = &cfg.docker {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting a runtime for the Docker provider")?;
        let found = rt.block_on(async {
            let docker = docker::connect(d).await?;
            docker::snapshot(&docker, d).await
        })?;
        all.entries.extend(found.entries);
        all.problems
            .extend(found.problems.into_iter().map(|m| format!("docker: {m}")));
    }
    if let Some(p) = &cfg.catalog {
        all.entries.extend(Catalog::load(p)?.entries);
    }
    if let Some(s) = &cfg.swarm {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting a runtime for the Swarm provider")?;
        let found = rt.block_on(async {
            let docker = docker::connect(&s.client()).await?;
            swarm::snapshot(&docker, s).await
        })?;
        all.entries.extend(found.entries);
        all.problems
            .extend(found.problems.into_iter().map(|m| format!("swarm: {m}")));
    }
    Ok(all)
}
