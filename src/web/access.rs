//! Who may use a listener, and which requests may change something.
//!
//! A request is admitted when its source address is in the listener's
//! allowed sources, or when it carries a valid bearer token. Under the
//! Supervisor the ingress listener allows only the ingress proxy, which has
//! authenticated the Home Assistant user already; the direct listener
//! allows no source, so every request there needs a token. `/healthz`
//! is also admitted from loopback, for the container's health check.
//!
//! Requests that change something (anything but GET, HEAD and OPTIONS)
//! need a bearer token or the UI's CSRF token in `X-CSRF-Token`: the
//! ingress session is a cookie the browser sends on its own, so a page
//! from elsewhere must not be able to post through it.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ring::digest::{SHA256, digest};

use super::problem::Problem;

/// The header that carries the UI's CSRF token.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";

/// An address range such as `172.30.32.2`, `10.0.0.0/8` or `::1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether `ip` is in the range. An IPv4 address seen as IPv6
    /// (`::ffff:a.b.c.d`, from a dual-stack listener) is taken as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr =
            addr.trim_start_matches('[').trim_end_matches(']').parse().map_err(|_| {
                format!("{text:?} is not an address or range; write e.g. 172.30.32.2, 10.0.0.0/8 or ::1")
            })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?} has a prefix length that is not 0 to {max}"))?,
        };
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let max = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.prefix == max { write!(f, "{}", self.addr) } else { write!(f, "{}/{}", self.addr, self.prefix) }
    }
}

/// An API token. Kept only as its SHA-256 digest, so it is never shown,
/// logged or compared byte by byte.
#[derive(Clone)]
pub struct Token([u8; 32]);

impl Token {
    /// A token from its text; `None` for one too short to be a secret
    /// (under 16 characters).
    pub fn new(text: &str) -> Option<Self> {
        let text = text.trim();
        (text.len() >= 16).then(|| Self(hash(text.as_bytes())))
    }

    /// Compares in constant time: both sides are digests of equal length,
    /// and every byte is looked at.
    fn matches(&self, presented: &[u8]) -> bool {
        let presented = hash(presented);
        self.0.iter().zip(presented.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(..)")
    }
}

fn hash(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

/// The rules of one listener.
#[derive(Clone, Debug)]
pub(crate) struct Access {
    /// Sources admitted without a token; `None` admits every source.
    pub(crate) allow: Option<Arc<[IpNet]>>,
    pub(crate) tokens: Arc<[Token]>,
    pub(crate) csrf: Arc<str>,
}

impl Access {
    fn source_allowed(&self, ip: IpAddr) -> bool {
        self.allow.as_ref().is_none_or(|nets| nets.iter().any(|n| n.contains(ip)))
    }

    fn bearer(&self, request: &Request) -> Option<bool> {
        let value = request.headers().get(header::AUTHORIZATION)?.as_bytes();
        let token = value.strip_prefix(b"Bearer ").or_else(|| value.strip_prefix(b"bearer "))?;
        Some(self.tokens.iter().any(|t| t.matches(token)))
    }

    fn csrf_ok(&self, request: &Request) -> bool {
        request.headers().get(CSRF_HEADER).is_some_and(|v| {
            let (a, b) = (hash(v.as_bytes()), hash(self.csrf.as_bytes()));
            a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
        })
    }
}

/// The middleware that applies [`Access`] to every request.
pub(crate) async fn guard(
    State(access): State<Access>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let ip = peer.ip();
    let bearer = access.bearer(&request);
    let health = request.uri().path() == "/healthz" && (ip.is_loopback() || is_mapped_loopback(ip));
    if bearer == Some(false) {
        return refused(StatusCode::UNAUTHORIZED, "the bearer token is not valid", &access);
    }
    let admitted = bearer == Some(true) || health || access.source_allowed(ip);
    if !admitted {
        tracing::debug!(source = %ip, "web request refused: source not allowed");
        return if access.tokens.is_empty() {
            refused(StatusCode::FORBIDDEN, "requests from this address are not allowed here", &access)
        } else {
            refused(StatusCode::UNAUTHORIZED, "send `Authorization: Bearer <token>` with an API token", &access)
        };
    }
    let safe = matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe && bearer != Some(true) && !access.csrf_ok(&request) {
        return refused(
            StatusCode::FORBIDDEN,
            "a request that changes something needs an API token or the page's CSRF token in X-CSRF-Token; \
             reload the page",
            &access,
        );
    }
    next.run(request).await
}

fn is_mapped_loopback(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()))
}

fn refused(status: StatusCode, detail: &str, access: &Access) -> Response {
    let mut response = Problem::new(status, detail).into_response();
    if status == StatusCode::UNAUTHORIZED && !access.tokens.is_empty() {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_contain_what_they_should() {
        let net: IpNet = "172.30.32.2".parse().unwrap();
        assert!(net.contains("172.30.32.2".parse().unwrap()));
        assert!(!net.contains("172.30.32.3".parse().unwrap()));
        assert!(net.contains("::ffff:172.30.32.2".parse().unwrap()), "IPv4 seen through a dual-stack socket");
        let lan: IpNet = "10.0.0.0/8".parse().unwrap();
        assert!(lan.contains("10.200.1.1".parse().unwrap()));
        assert!(!lan.contains("11.0.0.1".parse().unwrap()));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let v6: IpNet = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("127.0.0.1".parse().unwrap()));
        assert_eq!(lan.to_string(), "10.0.0.0/8");
        for bad in ["", "10.0.0.0/33", "host", "::1/129"] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens_match_only_themselves_and_never_show() {
        let token = Token::new("a-long-enough-secret").unwrap();
        assert!(token.matches(b"a-long-enough-secret"));
        assert!(!token.matches(b"a-long-enough-secreT"));
        assert!(!token.matches(b""));
        assert!(Token::new("short").is_none());
        assert_eq!(format!("{token:?}"), "Token(..)");
    }
}
