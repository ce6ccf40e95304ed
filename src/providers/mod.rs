//! Providers: where the catalog comes from. Each provider sends full catalog snapshots to the
//! control loop (`Trigger::Catalog`); none of them touches the route table.
//!
//! Today: `file` (a JSON catalog file, watched for changes). Docker and Swarm come next.

pub mod file;
