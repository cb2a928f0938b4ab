//! The HTTP side: the web UI, the REST API under `/api/v1`, `/healthz`,
//! `/readyz` and `/metrics`.
//!
//! The UI opens as a panel inside Home Assistant through ingress, which
//! serves it under a path of its own (`/api/hassio_ingress/<token>/`) and
//! strips that path before the request arrives here. So every link, form
//! and fetch in a page is relative (see `pages::Root`) and no page names
//! an absolute URL: the same pages work under any prefix.
//!
//! The web layer talks to the engine only through the control API
//! ([`Engine`]), the status hub ([`Engine::subscribe`]) and the store's
//! public query operations; there is no SQL here. Who may use a listener,
//! and which requests may change something, is `access`'s job; errors are
//! `problem`'s.

mod access;
mod api;
mod assets;
mod extract;
mod health;
mod metrics;
mod pages;
mod problem;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method, header};
use ring::rand::SecureRandom as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

pub use access::{IpNet, Token};
pub use api::openapi;

use crate::engine::Engine;

/// The policy for every page: scripts, styles and fetches from this server
/// only, nothing inline, framed only by the same origin (the Home
/// Assistant frontend that holds the ingress panel).
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                                       connect-src 'self'; frame-ancestors 'self'; base-uri 'none'; \
                                       form-action 'self'; object-src 'none'";

/// Where and for whom the web server listens.
#[derive(Clone, Debug)]
pub struct WebOptions {
    /// The UI and API listener (in the add-on: the ingress port, 8099).
    pub listen: SocketAddr,
    /// Sources admitted on `listen` without a token; `None` admits every
    /// source. Under the Supervisor: the ingress proxy, 172.30.32.2.
    pub allow: Option<Vec<IpNet>>,
    /// An optional second listener on which every request but `/healthz`
    /// needs a bearer token: for scripts and tools outside Home Assistant.
    pub direct: Option<SocketAddr>,
    /// API tokens, accepted on both listeners.
    pub tokens: Vec<Token>,
    /// Origins allowed to call the API from a browser (CORS), such as
    /// `https://dashboard.example.org`; none by default.
    pub cors_origins: Vec<String>,
    /// How many days of messages the store keeps (shown on the store page).
    pub retention_days: u32,
}

/// Why the web server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebError {
    /// A listener could not bind its address.
    #[error("the web server cannot listen on {addr}: {reason}; choose another port or stop what holds it")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why (in the message already, so not its source).
        reason: std::io::Error,
    },
    /// A CORS origin is not one.
    #[error("{0:?} is not an origin; write it as https://host or https://host:port")]
    Origin(String),
    /// No random numbers for the CSRF token.
    #[error("no random numbers available for the web UI's CSRF token")]
    NoRandomness,
}

/// What every handler gets.
#[derive(Clone)]
pub(crate) struct App {
    pub(crate) engine: Engine,
    /// The CSRF token that pages carry (see `access`).
    pub(crate) csrf: Arc<str>,
    pub(crate) retention_days: u32,
    pub(crate) mqtt: Option<watch::Receiver<crate::ha::MqttStatus>>,
}

/// A running web server.
pub struct WebServer {
    addrs: Vec<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl WebServer {
    /// The address the UI listener is bound to (the port chosen when 0 was
    /// asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// The direct listener's address, if there is one.
    pub fn direct_addr(&self) -> Option<SocketAddr> {
        self.addrs.get(1).copied()
    }

    /// Stops accepting connections and lets requests under way finish,
    /// for at most five seconds (event streams are cut).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task).await.is_err() {
                abort.abort();
            }
        }
    }
}

/// Binds the listeners and serves until [`WebServer::shutdown`].
/// Binds the listeners and serves until [`WebServer::shutdown`], without
/// the MQTT bridge's state: [`bind`] then [`Listeners::serve`].
pub async fn start(engine: Engine, options: WebOptions) -> Result<WebServer, WebError> {
    Ok(bind(options).await?.serve(engine, None))
}

/// The web server's listeners, bound and not yet serving.
///
/// `switchboard run` binds them before any production starts, so that a
/// port another program holds stops it before a message has been taken
/// in, not after; until [`serve`](Self::serve), connections wait in the
/// listen backlog.
pub struct Listeners {
    bound: Vec<(TcpListener, SocketAddr, access::Access)>,
    csrf: Arc<str>,
    cors_origins: Vec<HeaderValue>,
    retention_days: u32,
}

/// Checks the options and binds the listeners.
pub async fn bind(options: WebOptions) -> Result<Listeners, WebError> {
    let mut csrf = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut csrf).map_err(|_| WebError::NoRandomness)?;
    let csrf: Arc<str> = csrf.iter().map(|b| format!("{b:02x}")).collect::<String>().into();
    let cors_origins = options
        .cors_origins
        .iter()
        .map(|o| {
            let o = o.trim_end_matches('/');
            let host = o.strip_prefix("https://").or_else(|| o.strip_prefix("http://"));
            let valid = host.is_some_and(|h| !h.is_empty() && !h.contains('/'));
            valid.then(|| HeaderValue::from_str(o).ok()).flatten().ok_or_else(|| WebError::Origin(o.to_owned()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let tokens: Arc<[Token]> = options.tokens.into();
    let ui = access::Access { allow: options.allow.map(Into::into), tokens: tokens.clone(), csrf: csrf.clone() };
    let mut listeners = vec![(options.listen, ui)];
    if let Some(direct) = options.direct {
        listeners.push((direct, access::Access { allow: Some(Arc::new([])), tokens, csrf: csrf.clone() }));
    }
    let mut bound = Vec::new();
    for (addr, access) in listeners {
        let listener = TcpListener::bind(addr).await.map_err(|reason| WebError::Bind { addr, reason })?;
        let local = listener.local_addr().map_err(|reason| WebError::Bind { addr, reason })?;
        bound.push((listener, local, access));
    }
    Ok(Listeners { bound, csrf, cors_origins, retention_days: options.retention_days })
}

impl Listeners {
    /// Serves on every listener until [`WebServer::shutdown`]; `mqtt` is
    /// the MQTT bridge's state, for the UI and `/metrics` (`None` without a
    /// bridge).
    pub fn serve(self, engine: Engine, mqtt: Option<watch::Receiver<crate::ha::MqttStatus>>) -> WebServer {
        let app = App { engine, csrf: self.csrf, retention_days: self.retention_days, mqtt };
        let (stop, stopped) = watch::channel(false);
        let mut addrs = Vec::new();
        let mut tasks = Vec::new();
        for (listener, bound, access) in self.bound {
            addrs.push(bound);
            let router = router(app.clone(), access, &self.cors_origins);
            let mut stopped = stopped.clone();
            let service = router.into_make_service_with_connect_info::<SocketAddr>();
            tasks.push(tokio::spawn(async move {
                let shutdown = async move {
                    let _ = stopped.wait_for(|s| *s).await;
                };
                if let Err(e) = axum::serve(listener, service).with_graceful_shutdown(shutdown).await {
                    tracing::error!(error = %e, "the web server stopped");
                }
            }));
            tracing::info!(address = %bound, "web server listening");
        }
        WebServer { addrs, stop, tasks }
    }
}

/// Every route of one listener, behind its access rules.
fn router(app: App, access: access::Access, cors_origins: &[HeaderValue]) -> Router {
    let (api, _) = api::routes().split_for_parts();
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(cors_origins.iter().cloned()))
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, HeaderName::from_static(access::CSRF_HEADER)])
        .max_age(Duration::from_secs(600));
    Router::new()
        .nest("/api/v1", api)
        .merge(pages::routes())
        .merge(health::routes())
        .merge(assets::routes())
        .route("/metrics", axum::routing::get(metrics::serve))
        .fallback(not_found)
        .with_state(app)
        .layer(axum::middleware::from_fn_with_state(access, access::guard))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ))
        .layer(SetResponseHeaderLayer::overriding(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .layer(SetResponseHeaderLayer::overriding(header::REFERRER_POLICY, HeaderValue::from_static("same-origin")))
        .layer(cors)
        .layer(tower_http::compression::CompressionLayer::new())
}

/// Anything else: a problem document, like every other error.
async fn not_found(uri: axum::http::Uri) -> problem::Problem {
    problem::Problem::not_found(format!("nothing is served at {}", uri.path()))
}
