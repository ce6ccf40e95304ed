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
