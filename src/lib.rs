//! switchyard: a programmable edge router whose routing configuration is Rhai code.
//!
//! Data flow: providers (a catalog file, a Docker engine) → catalog → scripts → route table → proxy.
//! See ARCHITECTURE.md for the codemap, invariants and glossary.
//!
//! No panics on input anywhere in the library: request path, provider and script input all go
//! through code where these lints are denied (tests may unwrap).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod access_log;
pub mod acme;
pub mod admin;
pub mod app;
pub mod balance;
pub mod canonical;
pub mod catalog;
pub mod check;
pub mod config;
pub mod control;
pub mod duration;
pub mod metrics;
pub mod middleware;
pub mod providers;
pub mod proxy;
pub mod recording;
pub mod replay;
pub mod routing;
pub mod script;
pub mod settings;
pub mod table;
pub mod tls;
pub mod traefik;
pub mod whoami;
