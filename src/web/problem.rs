//! Errors as `application/problem+json` (RFC 9457): a status, a short
//! title and a `detail` that says what was wrong and what to do. Every
//! handler error is one, pages included, so scripts and the UI's own
//! JavaScript read errors the same way.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::engine::ControlError;
use crate::store::StoreError;

/// A problem response.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct Problem {
    /// Always `about:blank`: the status and title say what kind it is.
    #[serde(rename = "type")]
    kind: &'static str,
    /// The HTTP status's reason phrase.
    title: String,
    /// The HTTP status code.
    status: u16,
    /// What was wrong, in a sentence an operator can act on.
    detail: String,
}

impl Problem {
    pub(crate) fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
        }
    }

    pub(crate) fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    pub(crate) fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    pub(crate) fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, detail)
    }

    /// The store failed: said without the message's content, and logged.
    pub(crate) fn store(error: &StoreError) -> Self {
        tracing::error!(error = %error, "a web request failed in the store");
        Self::new(StatusCode::SERVICE_UNAVAILABLE, format!("the message store failed: {error}"))
    }

    pub(crate) fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<ControlError> for Problem {
    fn from(error: ControlError) -> Self {
        match &error {
            ControlError::UnknownProduction(_) | ControlError::UnknownItem { .. } => Self::not_found(error.to_string()),
            ControlError::Store(e) => Self::store(e),
        }
    }
}

impl From<StoreError> for Problem {
    fn from(error: StoreError) -> Self {
        Self::store(&error)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, Json(self)).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        response
    }
}
