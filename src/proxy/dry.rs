//! Dry runs: what the live proxy would do with one request, without sending anything anywhere.
//! Replay, the REPL, `switchyard test` and the explain endpoint all come here.
//!
//! Owns `DryRequest` (a request head, a client address, the time it happened) and `Decision`
//! (routes considered, the route taken, middleware notes, and the outcome: the request as it
//! would leave for the chosen server, or the direct answer).
//!
//! Invariants: a dry run is the live phase list (`Proxy::run_phases`: canonicalise, lookup,
//! forwarding headers, middleware phases) with only the target phase replaced (`Dry`:
//! `Service::pick` and `upstream_head`, nothing sent), and `Plan::dry` set, which only stops
//! what would leave the process (forward_auth, error-page fetches) and adds notes. The explain list is narration next to the
//! lookup: it never decides the route, and when it disagrees the lookup wins. Limiter, balancer
//! and breaker state is the proxy's own, so a sequence of dry runs on one `Proxy` behaves like the
//! same sequence of live requests on a freshly started router.

use std::sync::Arc;
use std::time::Instant;

use http::{header, HeaderMap, HeaderValue, Request, Response, Uri, Version};
use serde::Serialize;

use super::body::ProxyBody;
use super::ctx::{Peer, RequestCtx};
use super::error::ProxyError;
use super::exchange::upstream_head;
use super::phases::Exchange;
use super::{pipeline, Proxy};
pub use crate::recording::format::DryRequest;
use crate::routing::RequestView;
use crate::table::RouteTable;

/// One route of the entrypoint, in priority order, as the lookup met it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Considered {
    pub route: String,
    pub priority: i64,
    pub rule: String,
    pub declared_at: String,
    pub matched: bool,
    /// Why it did not match: the first failing matcher and what the request had.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

/// Header changes between the client's request and the request as it leaves.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct HeaderDiff {
    pub added: Vec<(String, String)>,
    pub removed: Vec<String>,
    /// (name, before, after)
    pub changed: Vec<(String, String, String)>,
}

/// What happens to the request.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// Sent to a server.
    Forward {
        service: String,
        server: String,
        method: String,
        /// Path and query as the server receives them.
        path: String,
        headers: HeaderDiff,
        #[serde(skip_serializing_if = "Option::is_none")]
        sticky_cookie: Option<String>,
        /// Mirror services that get a copy (`mirror(...)`); their answers are dropped.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        mirrors: Vec<String>,
    },
    /// Answered by the router: a handler, a middleware (redirect, auth, limit, hook) or an
    /// error (no route, no server, bad request).
    Answer {
        status: u16,
        #[serde(skip_serializing_if = "Option::is_none")]
        location: Option<String>,
        /// Why, in words: `redirect`, `respond`, `middleware`, or the error.
        by: String,
    },
}

/// Everything a dry run learned about one request.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Decision {
    pub entrypoint: String,
    /// The canonical host the decision was made on.
    pub host: String,
    /// The canonical path the decision was made on (`canonical::canonical_path`); empty when the
    /// request was refused before it had one.
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub declared_at: Option<String>,
    pub considered: Vec<Considered>,
    pub steps: Vec<String>,
    pub outcome: Outcome,
}

impl Decision {
    /// One line: `route → service @ server  METHOD /path` or `route → 301 location`.
    pub fn summary(&self) -> String {
        let route = self.route.as_deref().unwrap_or("(no route)");
        match &self.outcome {
            Outcome::Forward {
                service,
                server,
                method,
                path,
                mirrors,
                ..
            } if !mirrors.is_empty() => format!(
                "{route} → {service} @ {server}  {method} {path}  (copied to {})",
                mirrors.join(", ")
            ),
            Outcome::Forward {
                service,
                server,
                method,
                path,
                ..
            } => format!("{route} → {service} @ {server}  {method} {path}"),
            Outcome::Answer {
                status,
                location,
                by,
            } => match location {
                Some(l) => format!("{route} → {status} {l} ({by})"),
                None => format!("{route} → {status} ({by})"),
            },
        }
    }

    pub fn status(&self) -> Option<u16> {
        match &self.outcome {
            Outcome::Answer { status, .. } => Some(*status),
            Outcome::Forward { .. } => None,
        }
    }
}

fn text(v: &HeaderValue) -> String {
    String::from_utf8_lossy(v.as_bytes()).into_owned()
}

/// Header changes from `before` to `after`, in `after`'s order then removals.
pub fn header_diff(before: &HeaderMap, after: &HeaderMap) -> HeaderDiff {
    let mut diff = HeaderDiff::default();
    let joined = |h: &HeaderMap, name: &header::HeaderName| {
        h.get_all(name)
            .iter()
            .map(text)
            .collect::<Vec<_>>()
            .join(", ")
    };
    for name in after.keys() {
        let now = joined(after, name);
        if before.contains_key(name) {
            let was = joined(before, name);
            if was != now {
                diff.changed.push((name.to_string(), was, now));
            }
        } else {
            diff.added.push((name.to_string(), now));
        }
    }
    for name in before.keys() {
        if !after.contains_key(name) {
            diff.removed.push(name.to_string());
        }
    }
    diff
}

/// The routes of `entrypoint` in priority order up to the first that matches, each with the
/// reason it did not.
pub fn explain(table: &RouteTable, entrypoint: &str, req: &RequestView<'_>) -> Vec<Considered> {
    let mut out = Vec::new();
    for route in table.routes() {
        let base = |matched: bool, failed: Option<String>| Considered {
            route: route.name.clone(),
            priority: route.priority,
            rule: route.rule_text.clone(),
            declared_at: route.declared_at.to_string(),
            matched,
            failed,
        };
        if !route.entrypoints.is_empty() && !route.entrypoints.iter().any(|e| e == entrypoint) {
            out.push(base(
                false,
                Some(format!(
                    "entrypoints [{}] ≠ entrypoint {entrypoint:?}",
                    route.entrypoints.join(", ")
                )),
            ));
            continue;
        }
        match route.rule.first_failure(req) {
            Ok(None) => {
                out.push(base(true, None));
                break;
            }
            Ok(Some(why)) => out.push(base(false, Some(why))),
            Err(message) => {
                out.push(base(false, Some(format!("predicate failed: {message}"))));
                break;
            }
        }
    }
    out
}

/// The dry target phase: the balancer's pick and the request head as it would leave, written
/// into the decision; nothing is sent.
struct Dry<'a> {
    decision: &'a mut Decision,
    dr: &'a DryRequest,
    now: Instant,
    by: Option<String>,
}

impl Exchange<()> for Dry<'_> {
    fn canonical(&mut self, ctx: &RequestCtx, req: &Request<()>) {
        self.decision.host = ctx.host.clone();
        self.decision.path = req.uri().path().to_string();
        let view = RequestView {
            method: req.method(),
            host: &ctx.host,
            path: req.uri().path(),
            query: req.uri().query(),
            headers: req.headers(),
            client_ip: ctx.peer.addr.ip(),
        };
        self.decision.considered = explain(&ctx.table, &self.dr.entrypoint, &view);
    }

    async fn service(
        &mut self,
        _proxy: &Proxy,
        ctx: &mut RequestCtx,
        req: Request<()>,
        svc: &Arc<crate::routing::Service>,
        websocket: bool,
    ) -> Result<Option<Response<ProxyBody>>, ProxyError> {
        let route = ctx.route.as_ref().map_or("", |r| r.name.as_str());
        let (parts, ()) = req.into_parts();
        let view = ctx.view(&parts);
        let pick = svc
            .pick(&view, self.now)
            .map_err(|message| ProxyError::Hook {
                route: route.to_string(),
                message,
            })?
            .ok_or_else(|| ProxyError::NoServer {
                service: svc.name.clone(),
            })?;
        let server = pick.at.server().ok_or_else(|| ProxyError::NoServer {
            service: svc.name.clone(),
        })?;
        let mut headers = parts.headers.clone();
        let uri = upstream_head(
            &parts.uri,
            &mut headers,
            server,
            pick.at.service.pass_host_header,
            websocket,
        )?;
        self.decision.outcome = Outcome::Forward {
            service: pick.at.service.name.clone(),
            server: server.authority.to_string(),
            method: parts.method.to_string(),
            path: uri
                .path_and_query()
                .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
            headers: header_diff(&self.dr.headers, &headers),
            sticky_cookie: (!pick.set_cookies.is_empty()).then(|| {
                pick.set_cookies
                    .iter()
                    .map(text)
                    .collect::<Vec<_>>()
                    .join(", ")
            }),
            mirrors: pick
                .mirrors
                .iter()
                .map(|m| m.service.name.clone())
                .collect(),
        };
        Ok(None)
    }

    fn answered_by(&mut self, by: &dyn Fn() -> String) {
        self.by = Some(by());
    }
}

impl Proxy {
    /// Decides `dr` as the live proxy would, on the proxy's current table: the same phase list
    /// (`run_phases`) with the dry exchange.
    pub async fn dry_run(&self, dr: DryRequest) -> Decision {
        let mut decision = Decision {
            entrypoint: dr.entrypoint.clone(),
            host: String::new(),
            path: String::new(),
            route: None,
            declared_at: None,
            considered: Vec::new(),
            steps: Vec::new(),
            outcome: Outcome::Answer {
                status: 400,
                location: None,
                by: String::new(),
            },
        };
        let uri: Uri = match dr.uri.parse() {
            Ok(u) => u,
            Err(_) => {
                let e = ProxyError::BadRequest("invalid request target");
                decision.outcome = Outcome::Answer {
                    status: e.status().as_u16(),
                    location: None,
                    by: e.to_string(),
                };
                return decision;
            }
        };
        let mut req = Request::new(());
        *req.method_mut() = dr.method.clone();
        *req.uri_mut() = uri;
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = dr.headers.clone();
        let ep = self.metrics.entrypoint_index(&dr.entrypoint);
        let peer = Arc::new(Peer::new(
            dr.entrypoint.as_str().into(),
            dr.client,
            &self.settings,
            ep,
        ));
        let now = dr.at.unwrap_or_else(Instant::now);
        let plan = pipeline::Plan {
            path: peer.path,
            dry: Some(pipeline::DryNotes {
                now: Some(now),
                notes: Vec::new(),
            }),
            ..Default::default()
        };
        let mut ctx = RequestCtx::new(
            peer,
            req.method().clone(),
            req.uri().clone(),
            self.table.load_full(),
            plan,
        );
        let mut dry = Dry {
            decision: &mut decision,
            dr: &dr,
            now,
            by: None,
        };
        let answer = self.run_phases(&mut ctx, req, &mut dry).await;
        let by = dry.by.take().unwrap_or_default();
        if let Some(resp) = answer {
            decision.outcome = Outcome::Answer {
                status: resp.status().as_u16(),
                location: resp.headers().get(header::LOCATION).map(text),
                by,
            };
        }
        if let Some(route) = &ctx.route {
            decision.route = Some(route.name.clone());
            decision.declared_at = Some(route.declared_at.to_string());
        }
        decision.steps = ctx.plan.dry.take().map(|d| d.notes).unwrap_or_default();
        decision
    }
}
