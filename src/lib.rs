//! Switchboard: an HL7 v2 interface engine.
//!
//! Messages arrive over MLLP ([`mllp`]), are parsed without being altered
//! ([`hl7`]), and are acknowledged, stored, routed and delivered. The
//! `switchboard` binary is a thin layer over [`cli`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod hl7;
pub mod mllp;
