//! MLLP: the framing HL7 v2 uses over TCP and TLS, and a request/reply
//! client on top of it.

mod client;
pub mod codec;

pub use client::{ClientError, ClientTls, MllpClient, Stream};
pub use codec::*;
