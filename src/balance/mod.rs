//! Balancers: how a service picks one of its servers for a request, and the live state of each
//! server (health, passive ejection, in-flight count) that picks depend on.
//!
//! Owns the algorithms (`algo`: round robin — smooth weighted, nginx's sequence, when weights
//! differ —, least_conn, p2c, random, consistent hash by key) and `ServerState` (`state`). A
//! balancer only returns an index into the service's server list and never returns a server that
//! is unavailable or has weight 0; it never sees requests or sockets (the caller extracts the
//! hash key). Server state is shared by the table, the proxy and the health checker through
//! `Arc`s, and is carried into a rebuilt table when a service keeps its servers.

pub mod algo;
pub mod state;

pub use algo::{Algorithm, Balancer, HashKey};
pub use state::{InFlight, PassivePolicy, ServerState};
