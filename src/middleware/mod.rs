//! Middlewares: what a route does to a request between the route lookup and the upstream.
//!
//! Owns the `Middleware` values a route carries (in declaration order) and the contract of
//! per-request hooks (`RequestHook`), which the script layer implements. Natives run here at
//! native speed; a hook runs Rhai only on the routes that list it. Must never: touch sockets,
//! import `rhai`, or let a failing hook affect more than its own request.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, Method};

use crate::routing::Handler;

/// The parts of a request a hook may read and edit. Moved in and out of the proxy's request
/// (no header copies).
#[derive(Debug, Clone)]
pub struct HookRequest {
    pub method: Method,
    /// Lowercase host without port (as matched).
    pub host: String,
    pub path: String,
    /// Raw query without `?`; empty when none.
    pub query: String,
    pub headers: HeaderMap,
    pub client_ip: IpAddr,
}

/// What a hook decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOutcome {
    /// Go on with the (possibly edited) request.
    Continue,
    /// Answer directly; the request goes no further.
    Respond(Handler),
}

/// A per-request hook. `Err` carries a message for the log only; the client gets a bare 500.
pub trait RequestHook: Send + Sync + fmt::Debug {
    fn on_request(&self, req: &mut HookRequest) -> Result<HookOutcome, String>;
    /// How the hook is shown in listings, e.g. `on_request(Fn("canary"))`.
    fn describe(&self) -> String;
}

/// One step of a route's middleware chain.
#[derive(Debug, Clone)]
pub enum Middleware {
    OnRequest(Arc<dyn RequestHook>),
}

impl Middleware {
    pub fn describe(&self) -> String {
        match self {
            Middleware::OnRequest(h) => h.describe(),
        }
    }
}

/// Runs the request-phase middlewares in order; stops at the first direct answer.
pub fn run_request_phase(
    chain: &[Middleware],
    req: &mut HookRequest,
) -> Result<HookOutcome, String> {
    for m in chain {
        match m {
            Middleware::OnRequest(h) => match h.on_request(req)? {
                HookOutcome::Continue => {}
                answer => return Ok(answer),
            },
        }
    }
    Ok(HookOutcome::Continue)
}
