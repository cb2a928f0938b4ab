//! The integration tests, one module per area, in one test binary: each
//! binary links the whole crate and its dependencies, so one binary instead
//! of one per file saves most of the link time and disk of a test build.
//! A new area is a module here, not a new file directly under `tests/`.
//!
//! The tests of every module run in parallel threads of this one process,
//! so none may change process-wide state (environment variables, the
//! current directory, signal handlers, a global tracing subscriber): pass
//! values explicitly instead. Listeners take their ports from
//! [`ports::free_port`], which hands out each port once per process.

mod common;
mod mqtt_support;
mod ports;

mod addon;
mod browser;
mod cli;
mod config;
mod crash_recovery;
mod damaged;
mod demo;
mod disk_full;
mod downstream_faults;
mod engine;
mod engine_tls;
mod fixtures;
mod floods;
mod hl7_properties;
mod mllp_codec;
mod mqtt;
mod mqtt_faults;
mod mqtt_mosquitto;
mod search;
mod secrets;
mod store;
mod tls;
mod web;
