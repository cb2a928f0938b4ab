//! Messages: find, inspect and resend.

use axum::http::StatusCode;
use bytes::Bytes;
use utoipa_axum::router::OpenApiRouter;

use crate::web::App;
use crate::web::problem::Problem;

/// The largest message accepted from a page or a script.
pub(crate) const MAX_MESSAGE_BYTES: usize = 1 << 20;

pub(super) fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
}

/// A message typed or pasted into a page: line ends become the segment
/// separator, and it must parse (the error names its position).
pub(crate) fn message_bytes(text: &str) -> Result<Bytes, Problem> {
    let text = text.trim_matches(|c: char| c.is_whitespace() || c == '\u{b}' || c == '\u{1c}');
    if text.is_empty() {
        return Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "the message is empty; paste an HL7 message"));
    }
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the message has {} bytes; at most {MAX_MESSAGE_BYTES} are accepted here", text.len()),
        ));
    }
    let normalised = text.replace("\r\n", "\r").replace('\n', "\r");
    let bytes = Bytes::from(normalised);
    if let Err(e) = crate::hl7::Message::parse(&bytes) {
        return Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, format!("the message does not parse: {e}")));
    }
    Ok(bytes)
}
