//! switchyard: a programmable edge router whose routing configuration is Rhai code.
//!
//! Data flow: providers (a catalog file for now) → catalog → scripts → route table → proxy.
//! See ARCHITECTURE.md for the codemap, invariants and glossary.

pub mod admin;
pub mod app;
pub mod balance;
pub mod catalog;
pub mod check;
pub mod config;
pub mod control;
pub mod proxy;
pub mod routing;
pub mod script;
pub mod whoami;
