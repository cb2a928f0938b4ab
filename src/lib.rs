//! Switchboard: an HL7 v2 interface engine.
//!
//! Messages arrive over MLLP ([`mllp`]), are parsed without being altered
//! ([`hl7`]), and are acknowledged, stored, routed and delivered by the
//! [`engine`] as its productions file ([`config`]) describes. The
//! `switchboard` binary is a thin layer over [`cli`]. The durable [`store`]
//! keeps every message; [`tls`] holds the TLS configurations and the
//! certificate doctor; [`ha`] publishes the engine to Home Assistant, and
//! [`web`] serves the web UI, the REST API and the metrics. [`backup`]
//! copies the store while it runs, for Home Assistant's backups.
//!
//! `ARCHITECTURE.md` at the root of the repository is the map: each
//! module's job in data-flow order, the numbered invariants that comments
//! cite ("invariant 1"), and where a new item kind, setting, entity or
//! store operation goes.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backup;
pub mod cli;
pub mod config;
pub mod engine;
pub mod ha;
pub mod hl7;
pub mod mllp;
pub mod rules;
pub mod store;
pub mod tls;
pub mod web;

mod rate_limit;
mod sync;
