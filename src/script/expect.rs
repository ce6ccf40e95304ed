//! Test files (`*.test.rhai`, run by `switchyard test`): the engine they run on and the
//! expectations they state about how requests are routed.
//!
//! Owns the test-file API — request builders (`get`, `post`, `request`, `.header`, `.client`,
//! `.entrypoint`), `expect(req)` with its chained assertions, `test(name, || ...)`,
//! `recording(file)` and `expect_recorded(file)` — and `collect`, which runs one file and returns
//! its `TestCase`s. Running a file only records what it expects; deciding the requests is the
//! caller's (`replay::suite`, with `Session` dry runs), in the order they were expected.
//!
//! Invariants: the engine has the same sandbox as route scripts (operation, call-depth, size and
//! wall-clock limits, strict variables, no `eval`, modules only from the embedded stdlib) and no
//! builder functions; reading a recording goes through the loader the caller passes, so this
//! module itself reads nothing. A Rhai error inside `test(...)` fails that test only; a budget
//! error stops the file.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use rhai::{Dynamic, EvalAltResult, FnPtr, NativeCallContext, Scope};

use super::error::ScriptError;
use super::{build::install_stdlib, engine_with_limits, Limits};
use crate::recording::format::RecordedRequest;
use crate::routing::Location;

type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

/// Reads a recording named in a test file (relative to it): the requests, or why not.
pub type RecordingLoader = Arc<dyn Fn(&str) -> Result<Vec<RecordedRequest>, String> + Send + Sync>;

/// A request built in a test file.
#[derive(Debug, Clone)]
pub struct TestRequest {
    pub method: Method,
    /// Origin form: `/path?query`.
    pub target: String,
    /// As the client sends them, `Host` included (from the URL unless set with `.header`).
    pub headers: HeaderMap,
    pub client: SocketAddr,
    pub entrypoint: String,
}

impl TestRequest {
    /// `GET api.localhost/v1/users`
    pub fn line(&self) -> String {
        let host = self
            .headers
            .get(http::header::HOST)
            .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
            .unwrap_or_default();
        format!("{} {host}{}", self.method, self.target)
    }
}

/// What an expectation is about.
#[derive(Debug, Clone)]
pub enum Subject {
    Built(TestRequest),
    Recorded(Box<RecordedRequest>),
}

impl Subject {
    pub fn line(&self) -> String {
        match self {
            Subject::Built(r) => r.line(),
            Subject::Recorded(r) => format!("#{} {}", r.id, r.line()),
        }
    }
}

/// One assertion about a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    RoutesTo(String),
    ToService(String),
    ToServer(String),
    /// Path and query as the request leaves.
    WithPath(String),
    /// A header as the request leaves (values of a repeated header joined with `, `).
    WithHeader(String, String),
    WithoutHeader(String),
    /// The router answers with this status.
    Answers(u16),
    /// The router answers with a redirect to this location.
    RedirectsTo(String),
    NoRoute,
    /// Decided as the recording says the live router did (`differs_from_recording`).
    AsRecorded,
}

impl Check {
    /// As written in a test file: `routes_to("api")`.
    pub fn describe(&self) -> String {
        match self {
            Check::RoutesTo(r) => format!("routes_to({r:?})"),
            Check::ToService(s) => format!("to_service({s:?})"),
            Check::ToServer(s) => format!("to_server({s:?})"),
            Check::WithPath(p) => format!("with_path({p:?})"),
            Check::WithHeader(n, v) => format!("with_header({n:?}, {v:?})"),
            Check::WithoutHeader(n) => format!("without_header({n:?})"),
            Check::Answers(s) => format!("answers({s})"),
            Check::RedirectsTo(l) => format!("redirects_to({l:?})"),
            Check::NoRoute => "no_route()".to_string(),
            Check::AsRecorded => "as recorded".to_string(),
        }
    }

    /// Whether a failure of this check means the route was wrong (the explain trace helps).
    pub fn is_about_route(&self) -> bool {
        matches!(
            self,
            Check::RoutesTo(_) | Check::NoRoute | Check::AsRecorded
        )
    }
}

#[derive(Debug, Clone)]
pub struct Assertion {
    pub check: Check,
    pub at: Location,
}

/// `expect(req)` and the assertions chained on it.
#[derive(Debug, Clone)]
pub struct Expectation {
    pub subject: Subject,
    pub at: Location,
    pub assertions: Vec<Assertion>,
}

/// One test: a `test(name, ...)` block, or one top-level expectation, or one recorded request of
/// `expect_recorded`. It fails on its first failed expectation, else on `error`.
#[derive(Debug, Clone)]
pub struct TestCase {
    pub name: String,
    pub at: Location,
    pub expectations: Vec<Expectation>,
    /// A Rhai error inside the test (or the file's own error, for the pseudo-test naming it).
    pub error: Option<ScriptError>,
}

/// The expectation handle scripts chain assertions on (shared: Rhai passes it by value).
#[derive(Debug, Clone)]
pub struct ExpectHandle(Arc<Mutex<Expectation>>);

/// A recorded request as test files see it.
#[derive(Debug, Clone)]
pub struct ScriptRecorded(Arc<RecordedRequest>);

#[derive(Default)]
struct State {
    cases: Vec<(TestCase, Vec<ExpectHandle>)>,
    /// The `test(...)` being run, by index into `cases`.
    open: Option<usize>,
}

struct Collector {
    file: String,
    text: String,
    state: Mutex<State>,
    loader: RecordingLoader,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn runtime_error<T>(ctx: &NativeCallContext, msg: impl Into<String>) -> RhaiResult<T> {
    Err(Box::new(EvalAltResult::ErrorRuntime(
        Dynamic::from(msg.into()),
        ctx.call_position(),
    )))
}

impl Collector {
    fn location(&self, ctx: &NativeCallContext) -> Location {
        let pos = ctx.call_position();
        Location {
            file: self.file.clone(),
            line: pos.line().unwrap_or(0),
            column: pos.position().unwrap_or(0),
        }
    }

    /// Records an expectation: in the open test, or as a test of its own.
    fn expect(&self, subject: Subject, at: Location, name: Option<String>) -> ExpectHandle {
        let handle = ExpectHandle(Arc::new(Mutex::new(Expectation {
            subject,
            at: at.clone(),
            assertions: Vec::new(),
        })));
        let mut st = lock(&self.state);
        let open = st.open;
        match open.and_then(|i| st.cases.get_mut(i)) {
            Some((_, handles)) => handles.push(handle.clone()),
            None => {
                let name = name.unwrap_or_else(|| {
                    format!("{} (line {})", lock(&handle.0).subject.line(), at.line)
                });
                st.cases.push((
                    TestCase {
                        name,
                        at,
                        expectations: Vec::new(),
                        error: None,
                    },
                    vec![handle.clone()],
                ));
            }
        }
        handle
    }

    fn load(&self, ctx: &NativeCallContext, name: &str) -> RhaiResult<Vec<RecordedRequest>> {
        match (self.loader)(name) {
            Ok(r) => Ok(r),
            Err(e) => runtime_error(ctx, e),
        }
    }

    fn into_cases(self) -> Vec<TestCase> {
        let st = self.state.into_inner().unwrap_or_else(|e| e.into_inner());
        st.cases
            .into_iter()
            .map(|(mut case, handles)| {
                case.expectations = handles.into_iter().map(|h| lock(&h.0).clone()).collect();
                case
            })
            .collect()
    }
}

/// The outcome of running one test file.
#[derive(Debug)]
pub struct Collected {
    pub cases: Vec<TestCase>,
    /// A syntax error, or a Rhai error outside any `test(...)` (the file stopped there; the
    /// tests before it are still in `cases`).
    pub error: Option<ScriptError>,
}

/// Runs the test file `text` (shown as `file`) and returns what it expects.
pub fn collect(file: &str, text: &str, limits: &Limits, loader: RecordingLoader) -> Collected {
    let collector = Arc::new(Collector {
        file: file.to_string(),
        text: text.to_string(),
        state: Mutex::new(State::default()),
        loader,
    });
    let mut engine = engine_with_limits(limits, limits.build_operations);
    register(&mut engine, &collector);
    let error = match install_stdlib(&mut engine) {
        Err(e) => Some(e),
        Ok(()) => {
            let deadline = Instant::now() + limits.build_time;
            engine.on_progress(move |_| {
                (Instant::now() > deadline).then(|| Dynamic::from("test time budget exceeded"))
            });
            match engine.compile(text) {
                Err(e) => Some(ScriptError::from_parse(file, &e).with_source(text)),
                Ok(mut ast) => {
                    ast.set_source(file);
                    engine
                        .run_ast_with_scope(&mut Scope::new(), &ast)
                        .err()
                        .map(|e| eval_error(file, text, &e))
                }
            }
        }
    };
    drop(engine);
    let cases = match Arc::try_unwrap(collector) {
        Ok(c) => c.into_cases(),
        // Unreachable once the engine is dropped; keep whatever is there rather than panic.
        Err(shared) => lock(&shared.state)
            .cases
            .iter()
            .map(|(c, _)| c.clone())
            .collect(),
    };
    Collected { cases, error }
}

/// A Rhai error as a `ScriptError`, without the closure names Rhai puts in the call chain.
fn eval_error(file: &str, text: &str, err: &EvalAltResult) -> ScriptError {
    let mut e = ScriptError::from_eval(file, err).with_source(text);
    const CHAIN: &str = " (in call to ";
    if let Some(i) = e.message.find(CHAIN) {
        let chain: Vec<String> = e
            .message
            .get(i + CHAIN.len()..)
            .unwrap_or("")
            .trim_end_matches(')')
            .split(" → ")
            .filter(|n| !n.starts_with("anon$"))
            .map(str::to_string)
            .collect();
        let mut head = e.message.get(..i).unwrap_or("").to_string();
        if !chain.is_empty() {
            head.push_str(&format!("{CHAIN}{})", chain.join(" → ")));
        }
        e.message = head;
    }
    e
}

fn parse_url(raw: &str) -> Result<(Option<String>, String), String> {
    let uri: http::Uri = raw.parse().map_err(|_| format!("invalid url {raw:?}"))?;
    let target = uri
        .path_and_query()
        .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
    let target = if target.is_empty() {
        "/".to_string()
    } else {
        target
    };
    if !target.starts_with('/') && target != "*" {
        return Err(format!(
            "invalid url {raw:?}: use http://host/path or /path"
        ));
    }
    Ok((uri.authority().map(|a| a.to_string()), target))
}

fn new_request(ctx: &NativeCallContext, method: &str, url: &str) -> RhaiResult<TestRequest> {
    let method = match Method::from_bytes(method.to_ascii_uppercase().as_bytes()) {
        Ok(m) => m,
        Err(_) => return runtime_error(ctx, format!("invalid method {method:?}")),
    };
    let (authority, target) = match parse_url(url) {
        Ok(p) => p,
        Err(e) => return runtime_error(ctx, e),
    };
    let mut headers = HeaderMap::new();
    if let Some(a) = authority {
        match HeaderValue::from_str(&a) {
            Ok(v) => {
                headers.insert(http::header::HOST, v);
            }
            Err(_) => return runtime_error(ctx, format!("invalid host in {url:?}")),
        }
    }
    Ok(TestRequest {
        method,
        target,
        headers,
        client: SocketAddr::from(([127, 0, 0, 1], 0)),
        entrypoint: "web".to_string(),
    })
}

fn register(engine: &mut rhai::Engine, collector: &Arc<Collector>) {
    engine.register_type_with_name::<TestRequest>("TestRequest");
    engine.register_fn(
        "get",
        |ctx: NativeCallContext, url: &str| -> RhaiResult<TestRequest> {
            new_request(&ctx, "GET", url)
        },
    );
    engine.register_fn(
        "post",
        |ctx: NativeCallContext, url: &str| -> RhaiResult<TestRequest> {
            new_request(&ctx, "POST", url)
        },
    );
    engine.register_fn(
        "request",
        |ctx: NativeCallContext, method: &str, url: &str| -> RhaiResult<TestRequest> {
            new_request(&ctx, method, url)
        },
    );
    engine.register_fn(
        "header",
        |ctx: NativeCallContext,
         r: &mut TestRequest,
         name: &str,
         value: &str|
         -> RhaiResult<TestRequest> {
            let Ok(n) = HeaderName::from_bytes(name.as_bytes()) else {
                return runtime_error(&ctx, format!("invalid header name {name:?}"));
            };
            let Ok(v) = HeaderValue::from_str(value) else {
                return runtime_error(&ctx, format!("invalid value for header {name}"));
            };
            if n == http::header::HOST {
                r.headers.insert(n, v);
            } else {
                r.headers.append(n, v);
            }
            Ok(r.clone())
        },
    );
    engine.register_fn(
        "client",
        |ctx: NativeCallContext, r: &mut TestRequest, addr: &str| -> RhaiResult<TestRequest> {
            let parsed = addr
                .parse::<SocketAddr>()
                .or_else(|_| addr.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 0)));
            match parsed {
                Ok(a) => {
                    r.client = a;
                    Ok(r.clone())
                }
                Err(_) => runtime_error(&ctx, format!("invalid client address {addr:?}")),
            }
        },
    );
    engine.register_fn(
        "entrypoint",
        |r: &mut TestRequest, name: &str| -> TestRequest {
            r.entrypoint = name.to_string();
            r.clone()
        },
    );

    register_recorded(engine, collector);
    register_expect(engine, collector);
    register_test(engine, collector);
}

fn register_recorded(engine: &mut rhai::Engine, collector: &Arc<Collector>) {
    engine.register_type_with_name::<ScriptRecorded>("RecordedRequest");
    engine.register_get("id", |r: &mut ScriptRecorded| r.0.id as i64);
    engine.register_get("method", |r: &mut ScriptRecorded| r.0.method.clone());
    engine.register_get("host", |r: &mut ScriptRecorded| r.0.host.clone());
    engine.register_get("path", |r: &mut ScriptRecorded| r.0.path.clone());
    engine.register_get("query", |r: &mut ScriptRecorded| {
        r.0.query.clone().unwrap_or_default()
    });
    engine.register_get("entrypoint", |r: &mut ScriptRecorded| {
        r.0.entrypoint.clone()
    });
    let outcome = |f: fn(&crate::recording::format::RecordedOutcome) -> Option<String>| {
        move |r: &mut ScriptRecorded| -> Dynamic {
            r.0.outcome
                .as_ref()
                .and_then(f)
                .map_or(Dynamic::UNIT, Dynamic::from)
        }
    };
    engine.register_get("route", outcome(|o| o.route.clone()));
    engine.register_get("service", outcome(|o| o.service.clone()));
    engine.register_get("server", outcome(|o| o.server.clone()));
    engine.register_get("status", |r: &mut ScriptRecorded| -> Dynamic {
        r.0.outcome
            .as_ref()
            .map_or(Dynamic::UNIT, |o| Dynamic::from(i64::from(o.status)))
    });
    engine.register_fn("header", |r: &mut ScriptRecorded, name: &str| -> Dynamic {
        r.0.header(name)
            .map_or(Dynamic::UNIT, |v| Dynamic::from(v.to_string()))
    });
    engine.register_fn("to_string", |r: &mut ScriptRecorded| {
        format!("#{} {}", r.0.id, r.0.line())
    });

    let c = collector.clone();
    engine.register_fn(
        "recording",
        move |ctx: NativeCallContext, name: &str| -> RhaiResult<rhai::Array> {
            Ok(c.load(&ctx, name)?
                .into_iter()
                .map(|r| Dynamic::from(ScriptRecorded(Arc::new(r))))
                .collect())
        },
    );
    let c = collector.clone();
    engine.register_fn(
        "expect_recorded",
        move |ctx: NativeCallContext, name: &str| -> RhaiResult<()> {
            let at = c.location(&ctx);
            for r in c.load(&ctx, name)? {
                let case = format!("{name} #{} {}", r.id, r.line());
                let h = c.expect(Subject::Recorded(Box::new(r)), at.clone(), Some(case));
                lock(&h.0).assertions.push(Assertion {
                    check: Check::AsRecorded,
                    at: at.clone(),
                });
            }
            Ok(())
        },
    );
}

fn register_expect(engine: &mut rhai::Engine, collector: &Arc<Collector>) {
    engine.register_type_with_name::<ExpectHandle>("Expectation");
    let c = collector.clone();
    engine.register_fn(
        "expect",
        move |ctx: NativeCallContext, r: TestRequest| -> ExpectHandle {
            c.expect(Subject::Built(r), c.location(&ctx), None)
        },
    );
    let c = collector.clone();
    engine.register_fn(
        "expect",
        move |ctx: NativeCallContext, r: ScriptRecorded| -> ExpectHandle {
            let req = Box::new((*r.0).clone());
            c.expect(Subject::Recorded(req), c.location(&ctx), None)
        },
    );

    type Make<A> = fn(A) -> Result<Check, String>;
    fn add<A: Clone + Send + Sync + 'static>(
        engine: &mut rhai::Engine,
        c: &Arc<Collector>,
        name: &str,
        make: Make<A>,
    ) {
        let c = c.clone();
        engine.register_fn(
            name,
            move |ctx: NativeCallContext,
                  e: &mut ExpectHandle,
                  arg: A|
                  -> RhaiResult<ExpectHandle> {
                let check = match make(arg) {
                    Ok(check) => check,
                    Err(msg) => return runtime_error(&ctx, msg),
                };
                lock(&e.0).assertions.push(Assertion {
                    check,
                    at: c.location(&ctx),
                });
                Ok(e.clone())
            },
        );
    }
    add::<rhai::ImmutableString>(engine, collector, "routes_to", |s| {
        Ok(Check::RoutesTo(s.to_string()))
    });
    add::<rhai::ImmutableString>(engine, collector, "to_service", |s| {
        Ok(Check::ToService(s.to_string()))
    });
    add::<rhai::ImmutableString>(engine, collector, "to_server", |s| {
        Ok(Check::ToServer(s.to_string()))
    });
    add::<rhai::ImmutableString>(engine, collector, "with_path", |s| {
        Ok(Check::WithPath(s.to_string()))
    });
    add::<rhai::ImmutableString>(engine, collector, "without_header", |s| {
        HeaderName::from_bytes(s.as_bytes())
            .map(|n| Check::WithoutHeader(n.to_string()))
            .map_err(|_| format!("invalid header name {s:?}"))
    });
    add::<rhai::ImmutableString>(engine, collector, "redirects_to", |s| {
        Ok(Check::RedirectsTo(s.to_string()))
    });
    add::<i64>(engine, collector, "answers", |s| {
        u16::try_from(s)
            .ok()
            .filter(|s| (100..=999).contains(s))
            .map(Check::Answers)
            .ok_or_else(|| format!("invalid status {s}"))
    });
    for (name, check) in [
        ("no_route", Check::NoRoute),
        ("as_recorded", Check::AsRecorded),
    ] {
        let c = collector.clone();
        engine.register_fn(
            name,
            move |ctx: NativeCallContext, e: &mut ExpectHandle| -> ExpectHandle {
                lock(&e.0).assertions.push(Assertion {
                    check: check.clone(),
                    at: c.location(&ctx),
                });
                e.clone()
            },
        );
    }
    let c = collector.clone();
    engine.register_fn(
        "with_header",
        move |ctx: NativeCallContext,
              e: &mut ExpectHandle,
              name: &str,
              value: &str|
              -> RhaiResult<ExpectHandle> {
            let Ok(n) = HeaderName::from_bytes(name.as_bytes()) else {
                return runtime_error(&ctx, format!("invalid header name {name:?}"));
            };
            lock(&e.0).assertions.push(Assertion {
                check: Check::WithHeader(n.to_string(), value.to_string()),
                at: c.location(&ctx),
            });
            Ok(e.clone())
        },
    );
}

fn register_test(engine: &mut rhai::Engine, collector: &Arc<Collector>) {
    let c = collector.clone();
    engine.register_fn(
        "test",
        move |ctx: NativeCallContext, name: &str, body: FnPtr| -> RhaiResult<()> {
            let at = c.location(&ctx);
            let index = {
                let mut st = lock(&c.state);
                if st.open.is_some() {
                    drop(st);
                    return runtime_error(&ctx, "test(...) cannot be nested in another test");
                }
                st.cases.push((
                    TestCase {
                        name: name.to_string(),
                        at,
                        expectations: Vec::new(),
                        error: None,
                    },
                    Vec::new(),
                ));
                let i = st.cases.len() - 1;
                st.open = Some(i);
                i
            };
            let result = body.call_within_context::<Dynamic>(&ctx, ());
            let mut st = lock(&c.state);
            st.open = None;
            match result {
                Ok(_) => Ok(()),
                // Budgets are for the whole file: running on would only fail every later test.
                Err(e) if is_budget(&e) => Err(e),
                Err(e) => {
                    if let Some((case, _)) = st.cases.get_mut(index) {
                        case.error = Some(eval_error(&c.file, &c.text, &e));
                    }
                    Ok(())
                }
            }
        },
    );
}

fn is_budget(e: &EvalAltResult) -> bool {
    match e {
        EvalAltResult::ErrorTooManyOperations(_) | EvalAltResult::ErrorTerminated(..) => true,
        EvalAltResult::ErrorInFunctionCall(_, _, inner, _) => is_budget(inner),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_recordings() -> RecordingLoader {
        Arc::new(|name: &str| Err(format!("cannot read recording {name}")))
    }

    fn run(text: &str) -> Collected {
        collect("t.test.rhai", text, &Limits::default(), no_recordings())
    }

    #[test]
    fn tests_group_expectations_and_top_level_ones_stand_alone() {
        let c = run(concat!(
            "test(\"api\", || {\n",
            "    expect(get(\"http://api.localhost/v1?x=1\").header(\"x-user\", \"ann\"))\n",
            "        .routes_to(\"api\").with_path(\"/x\");\n",
            "    expect(post(\"http://api.localhost/\").client(\"10.0.0.1\").entrypoint(\"admin\")).answers(403);\n",
            "});\n",
            "expect(request(\"delete\", \"http://x.localhost/\")).no_route();\n",
        ));
        assert!(c.error.is_none(), "{:?}", c.error);
        let names: Vec<&str> = c.cases.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, vec!["api", "DELETE x.localhost/ (line 6)"]);
        let api = &c.cases[0];
        assert_eq!(api.expectations.len(), 2);
        let first = &api.expectations[0];
        let Subject::Built(r) = &first.subject else {
            panic!("built request expected")
        };
        assert_eq!(r.target, "/v1?x=1");
        assert_eq!(r.headers["host"], "api.localhost");
        assert_eq!(r.headers["x-user"], "ann");
        let checks: Vec<&Check> = first.assertions.iter().map(|a| &a.check).collect();
        assert_eq!(
            checks,
            vec![
                &Check::RoutesTo("api".into()),
                &Check::WithPath("/x".into())
            ]
        );
        // Each assertion knows where it was written.
        assert_eq!(
            (first.assertions[1].at.line, first.assertions[1].at.column),
            (3, 27)
        );
        let Subject::Built(second) = &api.expectations[1].subject else {
            panic!("built request expected")
        };
        assert_eq!(second.client.to_string(), "10.0.0.1:0");
        assert_eq!(second.entrypoint, "admin");
        assert_eq!(
            c.cases[1].expectations[0].assertions[0].check,
            Check::NoRoute
        );
    }

    #[test]
    fn a_rhai_error_fails_its_test_only() {
        let c = run(concat!(
            "test(\"broken\", || {\n",
            "    expect(get(\"http://a/\")).answers(200);\n",
            "    let x = 1 + \"a\" * 2;\n",
            "});\n",
            "test(\"fine\", || { expect(get(\"http://a/\")).answers(200); });\n",
        ));
        assert!(c.error.is_none(), "{:?}", c.error);
        assert_eq!(c.cases.len(), 2);
        let e = c.cases[0]
            .error
            .as_ref()
            .expect("the broken test has an error");
        assert_eq!((e.file.as_str(), e.line), ("t.test.rhai", 3), "{e}");
        assert!(!e.message.contains("anon$"), "{e}");
        assert_eq!(c.cases[0].expectations.len(), 1);
        assert!(c.cases[1].error.is_none());
    }

    #[test]
    fn file_errors_keep_the_tests_before_them() {
        let c = run("expect(get(\"http://a/\")).answers(200);\nexpect(get(\"no url\"));\n");
        let e = c.error.expect("bad url is an error");
        assert_eq!(e.line, 2, "{e}");
        assert!(e.message.contains("invalid url"), "{e}");
        assert_eq!(c.cases.len(), 1);

        let syntax = run("test(\"x\", || {\n  expect(get(\"http://a/\")\n});\n");
        assert!(syntax.cases.is_empty());
        assert_eq!(syntax.error.map(|e| e.line), Some(3));
    }

    #[test]
    fn nested_tests_and_bad_arguments_are_errors() {
        let c = run("test(\"outer\", || { test(\"inner\", || {}); });");
        let e = c.cases[0]
            .error
            .as_ref()
            .expect("nesting fails the outer test");
        assert!(e.message.contains("cannot be nested"), "{e}");
        for bad in [
            "expect(get(\"http://a/\")).answers(42);",
            "get(\"http://a/\").header(\"bad name\", \"v\");",
            "get(\"http://a/\").client(\"not-an-ip\");",
        ] {
            assert!(run(bad).error.is_some(), "{bad} should fail");
        }
    }

    #[test]
    fn recordings_come_from_the_loader() {
        let loader: RecordingLoader = Arc::new(|name: &str| {
            assert_eq!(name, "traffic.jsonl");
            Ok(crate::recording::format::parse(concat!(
                r#"{"time":"2026-12-03T07:00:00.000Z","method":"GET","host":"a.localhost","path":"/x","outcome":{"route":"a","status":200}}"#,
                "\n",
                r#"{"time":"2026-12-03T07:00:01.000Z","method":"GET","host":"b.localhost","path":"/y"}"#,
            ))
            .requests)
        });
        let c = collect(
            "t.test.rhai",
            concat!(
                "expect_recorded(\"traffic.jsonl\");\n",
                "for r in recording(\"traffic.jsonl\") {\n",
                "  if r.route == \"a\" && r.host == \"a.localhost\" && r.path == \"/x\" && r.id == 1 {\n",
                "    expect(r).routes_to(\"a\");\n",
                "  }\n",
                "}\n",
            ),
            &Limits::default(),
            loader,
        );
        assert!(c.error.is_none(), "{:?}", c.error);
        let names: Vec<&str> = c.cases.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "traffic.jsonl #1 GET a.localhost/x",
                "traffic.jsonl #2 GET b.localhost/y",
                "#1 GET a.localhost/x (line 4)",
            ]
        );
        assert_eq!(
            c.cases[0].expectations[0].assertions[0].check,
            Check::AsRecorded
        );
        let missing = run("recording(\"nope.jsonl\");");
        assert!(missing
            .error
            .is_some_and(|e| e.message.contains("nope.jsonl")));
    }

    #[test]
    fn the_sandbox_holds() {
        let limits = Limits {
            build_operations: 10_000,
            ..Limits::default()
        };
        let c = collect(
            "t.test.rhai",
            "test(\"spin\", || { loop {} });\ntest(\"after\", || {});",
            &limits,
            no_recordings(),
        );
        // A budget error stops the file instead of failing every later test.
        assert!(c.error.is_some_and(|e| e.message.contains("budget")));
        assert_eq!(c.cases.len(), 1);
        assert!(run("eval(\"1\")").error.is_some());
        assert!(run("import \"/etc/passwd\" as p;").error.is_some());
    }
}
