//! Routing: the immutable route table and everything needed to pick a route for a request.
//!
//! Owns matchers (`matcher`), Traefik rule parsing (`rule`) and the compiled `RouteTable`
//! (`table`), generic over the middleware its routes carry: routing is a leaf (it imports
//! neither `middleware` nor `metrics`; `crate::table` names the router's concrete table). Everything here is pure data and pure functions: no sockets, no `rhai`, no clocks.
//! A table is built once by the control loop and then only read; lookups never mutate it except
//! for balancer counters and server state (health, in-flight), which live behind atomics.

pub mod describe;
pub mod l4;
pub mod matcher;
pub mod rule;
pub mod service;
pub mod table;

pub use describe::{Describe, TableInfo};
pub use matcher::{HostPattern, Matcher, Predicate, RequestView};
pub use rule::{parse_rule, parse_tcp_rule, RuleError, RuleSyntax};
pub use service::{Pick, Picked, Pool, Server, Service, ServiceKind};
pub use table::{Handler, Location, MetricsSlot, Route, RouteTable, RouteTls, Target, TlsDomain};
