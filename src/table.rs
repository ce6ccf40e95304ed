//! The route table the router runs: `routing`'s generic table with `middleware::Middleware` as
//! the steps its routes carry. `routing` stays a leaf (it matches, indexes and picks servers; it
//! does not know what a middleware does) and `middleware` may name routes (`HookCtx`); these
//! aliases are where the two meet. Owns no code.

/// A route as the router runs it.
pub type Route = crate::routing::Route<crate::middleware::Middleware>;

/// The table the control loop builds and swaps, and every request reads.
pub type RouteTable = crate::routing::RouteTable<crate::middleware::Middleware>;
