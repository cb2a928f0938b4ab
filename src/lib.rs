//! Switchboard: an HL7 v2 interface engine.
#![forbid(unsafe_code)]

pub mod hl7;
