//! Messages: find, inspect and resend.

use axum::extract::State;
use axum::http::StatusCode;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::hl7::{Message, OutlineLine, outline};
use crate::store::{MessageDetail, MessagePage, MessageQuery, MessageSummary};
use crate::web::App;
use crate::web::extract::{Json, Path, Query};
use crate::web::problem::Problem;

/// The largest message accepted from a page or a script.
pub(crate) const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Rows per page when the request does not say.
pub(crate) const DEFAULT_LIMIT: usize = 50;
/// The most rows a page may ask for.
pub(crate) const MAX_LIMIT: usize = 500;

pub(super) fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(search))
        .routes(routes!(detail))
        .routes(routes!(resend))
        .routes(routes!(resendable))
        .routes(routes!(resend_all))
}

/// A search: the filters of [`MessageQuery`] plus where the page starts.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SearchParams {
    /// Created at or after (Unix milliseconds).
    pub(crate) from: Option<i64>,
    /// Created before (Unix milliseconds).
    pub(crate) to: Option<i64>,
    /// Production id.
    pub(crate) production: Option<String>,
    /// Item name (the service, router or operation that holds the message).
    pub(crate) item: Option<String>,
    /// Status: queued, delivering, completed, error, suspended, discarded.
    pub(crate) status: Option<String>,
    /// Message type: `ADT` for every ADT, `ADT^A01` exactly.
    pub(crate) message_type: Option<String>,
    /// MSH-10, exactly.
    pub(crate) control_id: Option<String>,
    /// PID-3's first identifier, exactly.
    pub(crate) patient_id: Option<String>,
    /// The start of PID-5's family name, any case.
    pub(crate) patient_name: Option<String>,
    /// Text inside the message, as written (a bounded scan per page).
    pub(crate) text: Option<String>,
    /// The `next` of the previous page.
    pub(crate) before: Option<i64>,
    /// Rows per page, 1 to 500 (default 50).
    pub(crate) limit: Option<usize>,
}

impl SearchParams {
    pub(crate) fn query(&self) -> Result<MessageQuery, Problem> {
        let text = |v: &Option<String>| v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);
        let status = match text(&self.status) {
            None => None,
            Some(s) => Some(crate::store::Status::parse(&s).ok_or_else(|| {
                Problem::bad_request(format!(
                    "{s:?} is not a status; use queued, delivering, completed, error, suspended or discarded"
                ))
            })?),
        };
        if let (Some(from), Some(to)) = (self.from, self.to)
            && from >= to
        {
            return Err(Problem::bad_request("`from` must be before `to`"));
        }
        Ok(MessageQuery {
            from: self.from,
            to: self.to,
            production: text(&self.production),
            item: text(&self.item),
            status,
            message_type: text(&self.message_type),
            control_id: text(&self.control_id),
            patient_id: text(&self.patient_id),
            patient_name: text(&self.patient_name),
            text: self.text.clone().filter(|t| !t.is_empty()),
        })
    }

    pub(crate) fn limit(&self) -> Result<usize, Problem> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            Some(n) => Err(Problem::bad_request(format!("limit {n} is out of range; use 1 to {MAX_LIMIT}"))),
        }
    }
}

/// Finds messages, newest first, a page at a time: pass a page's `next`
/// as `before` for the next one. A free-text search looks through a
/// bounded number of messages per call; when `next` is set and fewer rows
/// came back than asked, search further with it.
#[utoipa::path(
    get, path = "/messages", tag = "messages", params(SearchParams),
    responses((status = 200, body = MessagePage), (status = 400, body = Problem))
)]
async fn search(State(app): State<App>, Query(params): Query<SearchParams>) -> Result<Json<MessagePage>, Problem> {
    let query = params.query()?;
    let limit = params.limit()?;
    let store = app.engine.store().clone();
    let page = tokio::task::spawn_blocking(move || store.search_messages(&query, params.before, limit))
        .await
        .map_err(|_| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "the search was interrupted"))??;
    Ok(Json(page))
}

/// One message: header, body (as text and as an outline), the stored
/// reply, the session's trace and the resends made from it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Detail {
    pub(crate) message: MessageSummary,
    /// The message as text; segments end in `\r`.
    pub(crate) body: String,
    /// Every element with its path and decoded value; empty when the body
    /// does not parse (see `parse_error`).
    pub(crate) outline: Vec<Element>,
    pub(crate) parse_error: Option<String>,
    pub(crate) reply: Option<Reply>,
    /// Every header of the message's session, in order: received, routed,
    /// delivered.
    pub(crate) trace: Vec<MessageSummary>,
    /// The headers resent from this one.
    pub(crate) resends: Vec<i64>,
}

/// One element of a message's outline.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Element {
    pub(crate) depth: usize,
    pub(crate) path: String,
    pub(crate) value: String,
}

/// The reply a message got.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Reply {
    /// When it arrived (Unix milliseconds).
    pub(crate) received_at: i64,
    pub(crate) body: String,
    pub(crate) outline: Vec<Element>,
}

fn elements(lines: Vec<OutlineLine>) -> Vec<Element> {
    lines.into_iter().map(|l| Element { depth: l.depth, path: l.path, value: l.value }).collect()
}

pub(crate) fn parse_outline(body: &[u8]) -> (Vec<Element>, Option<String>) {
    match Message::parse(body) {
        Ok(msg) => (elements(outline(&msg)), None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    }
}

pub(crate) fn load_detail(app: &App, id: i64) -> Result<Detail, Problem> {
    let detail: MessageDetail =
        app.engine.store().message_detail(id)?.ok_or_else(|| Problem::not_found(format!("no message {id}")))?;
    let (outline, parse_error) = parse_outline(&detail.body);
    let reply = detail.reply.map(|(received_at, body)| Reply {
        received_at,
        outline: parse_outline(&body).0,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    Ok(Detail {
        message: detail.summary,
        body: String::from_utf8_lossy(&detail.body).into_owned(),
        outline,
        parse_error,
        reply,
        trace: detail.trace,
        resends: detail.resends,
    })
}

#[utoipa::path(
    get, path = "/messages/{id}", tag = "messages",
    params(("id" = i64, Path, description = "Header id")),
    responses((status = 200, body = Detail), (status = 404, body = Problem))
)]
async fn detail(State(app): State<App>, Path(id): Path<i64>) -> Result<Json<Detail>, Problem> {
    Ok(Json(load_detail(&app, id)?))
}

/// What to resend, and where; `{}` resends it as it was, to the same item.
#[derive(Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(default)]
pub(crate) struct Resend {
    /// The item to send it to (same production); default: the item that
    /// held it.
    pub(crate) target: Option<String>,
    /// A replacement text (edit & resend); checked before it is queued.
    pub(crate) message: Option<String>,
    /// Fields to set by path (`PID-8` = `F`), applied to the original or
    /// to `message`.
    #[serde(default)]
    pub(crate) edits: Vec<Edit>,
}

/// One field set by path.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub(crate) struct Edit {
    pub(crate) path: String,
    pub(crate) value: String,
}

/// The new message.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct Resent {
    /// The new header's id.
    pub(crate) id: i64,
    pub(crate) done: String,
}

/// Resends a message: as it was, to another item, or edited. The original
/// is kept unchanged and the two are linked both ways.
#[utoipa::path(
    post, path = "/messages/{id}/resend", tag = "messages",
    params(("id" = i64, Path, description = "Header id")),
    request_body = Resend,
    responses(
        (status = 201, body = Resent),
        (status = 404, body = Problem),
        (status = 422, body = Problem, description = "the edited message does not parse, or an edit's path is wrong")
    )
)]
async fn resend(
    State(app): State<App>,
    Path(id): Path<i64>,
    Json(request): Json<Resend>,
) -> Result<(StatusCode, Json<Resent>), Problem> {
    let store = app.engine.store();
    let detail = store.message_detail(id)?.ok_or_else(|| Problem::not_found(format!("no message {id}")))?;
    let target = request.target.clone().unwrap_or_else(|| detail.summary.target.clone());
    let production = detail.summary.production.clone();
    if app.engine.status().item(&production, &target).is_none() {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("production {production:?} has no item {target:?} to resend to"),
        ));
    }
    let edited = match (&request.message, request.edits.is_empty()) {
        (None, true) => None,
        (text, _) => {
            let base = match text {
                Some(text) => message_bytes(text)?,
                None => detail.body.clone(),
            };
            Some(apply_edits(&base, &request.edits)?)
        }
    };
    let new_id = store.resend_copy(id, &target, edited).await?;
    Ok((StatusCode::CREATED, Json(Resent { id: new_id, done: format!("message {id} resent to {target} as {new_id}") })))
}

/// Sets fields by path; each error names the edit and why.
pub(crate) fn apply_edits(body: &Bytes, edits: &[Edit]) -> Result<Bytes, Problem> {
    if edits.is_empty() {
        return Ok(body.clone());
    }
    let mut buf = crate::hl7::MessageBuf::new(body.to_vec())
        .map_err(|e| Problem::new(StatusCode::UNPROCESSABLE_ENTITY, format!("the message does not parse: {e}")))?;
    for (n, edit) in edits.iter().enumerate() {
        buf.set(edit.path.trim(), &edit.value).map_err(|e| {
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, format!("edit {} ({}): {e}", n + 1, edit.path.trim()))
        })?;
    }
    let bytes = Bytes::from(buf.into_bytes());
    if let Err(e) = Message::parse(&bytes) {
        return Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, format!("the edited message does not parse: {e}")));
    }
    Ok(bytes)
}

/// How many of an item's messages a bulk resend would send again.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct Resendable {
    /// Suspended and errored messages.
    pub(crate) count: u64,
}

#[utoipa::path(
    get, path = "/productions/{production}/items/{item}/resendable", tag = "messages",
    params(("production" = String, Path), ("item" = String, Path)),
    responses((status = 200, body = Resendable), (status = 404, body = Problem))
)]
async fn resendable(
    State(app): State<App>,
    Path((production, item)): Path<(String, String)>,
) -> Result<Json<Resendable>, Problem> {
    if app.engine.status().item(&production, &item).is_none() {
        return Err(super::unknown_item(&production, &item));
    }
    Ok(Json(Resendable { count: app.engine.store().count_resendable(&production, &item)? }))
}

/// The confirmation of a bulk resend: the count the user was shown.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct Confirm {
    /// The number from `resendable` that the user agreed to.
    pub(crate) expected: u64,
}

/// Puts every suspended and errored message of an item back in its queue,
/// in order. The caller confirms the count it was shown; if it changed
/// meanwhile, nothing is done (409) and the new count is in the detail.
#[utoipa::path(
    post, path = "/productions/{production}/items/{item}/resend-all", tag = "messages",
    params(("production" = String, Path), ("item" = String, Path)),
    request_body = Confirm,
    responses((status = 200, body = Resendable), (status = 404, body = Problem), (status = 409, body = Problem))
)]
async fn resend_all(
    State(app): State<App>,
    Path((production, item)): Path<(String, String)>,
    Json(confirm): Json<Confirm>,
) -> Result<Json<Resendable>, Problem> {
    if app.engine.status().item(&production, &item).is_none() {
        return Err(super::unknown_item(&production, &item));
    }
    let store = app.engine.store();
    let now = store.count_resendable(&production, &item)?;
    if now != confirm.expected {
        return Err(Problem::conflict(format!(
            "{now} messages can be resent now, not {}; confirm again with the new count",
            confirm.expected
        )));
    }
    let count = store.resend_all(&production, &item).await?;
    Ok(Json(Resendable { count }))
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
    // Every segment ends in a carriage return, the last one included.
    let mut normalised = text.replace("\r\n", "\r").replace('\n', "\r");
    normalised.push('\r');
    let bytes = Bytes::from(normalised);
    if let Err(e) = Message::parse(&bytes) {
        return Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, format!("the message does not parse: {e}")));
    }
    Ok(bytes)
}
