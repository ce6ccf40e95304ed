//! Integration tests: real backends (the built-in whoami), a real router on loopback port 0, and
//! real clients. One binary; modules follow what a user would try.

mod support;

mod access_log;
mod acme;
mod admin_api;
mod attacks;
mod auth_offload;
mod balance;
mod balancers;
mod canonical_props;
mod cli;
mod dashboard;
mod docker_compose;
mod docker_provider;
mod docker_rig;
mod docs_shell;
mod errors;
mod examples;
mod forwarding;
mod grpc;
mod h2_attacks;
mod hooks;
mod https_upstream;
mod metrics;
mod middlewares;
mod mirroring;
mod mw_access;
mod mw_upstream;
mod recording;
mod reference;
mod reload;
mod repl;
mod replay;
mod routing;
mod script_tests;
mod shared_limits;
mod static_reload;
mod swarm_provider;
mod swarm_stacks;
mod tidy;
mod tls;
mod traefik_file;
mod traefik_labels;
mod traefik_static;
mod websocket;
