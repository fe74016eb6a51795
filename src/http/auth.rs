//! The one place a request is authenticated: credentials are read from its headers
//! (HTTP Basic with the token as password, or as user name with an empty password;
//! `Bearer`; or a trusted proxy's user header), checked by the access layer, and a
//! refusal becomes the status git expects:
//!
//! - no credentials where some are needed, and wrong ones: `401` with a Basic
//!   challenge (git asks its credential helper, or tells it to forget what failed);
//! - a repository the caller may not read: the same `404` as a missing one;
//! - read but not write: `403` with the reason, which git shows as `remote:` lines;
//! - too many failures from one address: `429` with `Retry-After`.
//!
//! Credentials never appear in a log line or an error message.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use base64::Engine;

use super::{AppState, Failure};
use crate::access::token::Secret;
use crate::access::{AccessError, Allowed, Caller, Credentials, Denied, Need, View};
use crate::repo::RepoName;

/// Longest `Authorization` header looked at.
const MAX_AUTHORIZATION: usize = 4096;

fn bad(message: &str) -> Failure {
    Failure::status(StatusCode::BAD_REQUEST, message)
}

/// Where a trusted proxy's user header is looked for, and whom it is taken from.
#[derive(Debug, Clone, Copy)]
struct Proxy<'a> {
    header: &'a HeaderName,
    trusted: &'a [ipnet::IpNet],
    peer: std::net::IpAddr,
}

impl AppState {
    fn proxy(&self, peer: SocketAddr) -> Option<Proxy<'_>> {
        let header = self.options.trust_proxy_user.as_ref()?;
        Some(Proxy {
            header,
            trusted: &self.options.trusted_proxies,
            peer: peer.ip(),
        })
    }
}

/// The credentials `headers` carry.
fn credentials(headers: &HeaderMap, proxy: Option<Proxy<'_>>) -> Result<Credentials, Failure> {
    if let Some(proxy) = proxy
        && let Some(value) = headers.get(proxy.header)
    {
        let peer = match proxy.peer {
            std::net::IpAddr::V6(v6) => {
                v6.to_ipv4_mapped().map_or(proxy.peer, std::net::IpAddr::V4)
            }
            v4 => v4,
        };
        if !proxy.trusted.iter().any(|net| net.contains(&peer)) {
            return Err(Failure::status(
                StatusCode::FORBIDDEN,
                format!(
                    "the {} header is accepted only from trusted proxies",
                    proxy.header
                ),
            ));
        }
        let user = value
            .to_str()
            .map_err(|_| bad("the proxy's user header is not ASCII"))?;
        crate::access::state::check_user_name(user)
            .map_err(|_| bad("the proxy's user header does not hold a valid user name"))?;
        return Ok(Credentials::ProxyUser(user.to_owned()));
    }
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(Credentials::None);
    };
    if values.next().is_some() {
        return Err(bad("more than one Authorization header"));
    }
    if value.len() > MAX_AUTHORIZATION {
        return Err(bad("the Authorization header is too long"));
    }
    let text = value
        .to_str()
        .map_err(|_| bad("the Authorization header is not ASCII"))?;
    let (scheme, rest) = text.trim().split_once(' ').unwrap_or((text.trim(), ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .map_err(|_| bad("malformed Basic credentials"))?;
        let decoded =
            String::from_utf8(decoded).map_err(|_| bad("Basic credentials are not UTF-8"))?;
        let (user, password) = decoded
            .split_once(':')
            .ok_or_else(|| bad("malformed Basic credentials"))?;
        // The token is the password; or the user name, with an empty password.
        Ok(match (user, password) {
            (_, p) if !p.is_empty() => Credentials::Token(Secret::new(p)),
            (u, _) if !u.is_empty() => Credentials::Token(Secret::new(u)),
            _ => Credentials::None,
        })
    } else if scheme.eq_ignore_ascii_case("bearer") {
        if rest.is_empty() {
            return Err(bad("an empty Bearer token"));
        }
        Ok(Credentials::Token(Secret::new(rest)))
    } else {
        // Schemes this server does not offer carry nothing it can check.
        Ok(Credentials::None)
    }
}

pub(super) fn access_failure(e: AccessError) -> Failure {
    tracing::error!(error = %e, "checking access failed");
    Failure::status(
        StatusCode::SERVICE_UNAVAILABLE,
        "access control is unavailable; see the server log",
    )
}

fn denied(denied: Denied, repo: Option<&RepoName>) -> Failure {
    match denied {
        Denied::Unauthenticated | Denied::BadCredentials => Failure::Unauthorized,
        Denied::Throttled(wait) => Failure::Throttled(wait),
        Denied::Hidden { user } => Failure::Of(
            user,
            Box::new(match repo {
                Some(repo) => Failure::NotFound(repo.clone()),
                None => Failure::status(StatusCode::NOT_FOUND, "not found"),
            }),
        ),
        Denied::Forbidden { user, reason } => Failure::Of(
            user,
            Box::new(Failure::Status(StatusCode::FORBIDDEN, reason)),
        ),
    }
}

/// Authenticates the request and checks that it may do what `need` says with `repo`.
pub(super) async fn authorize(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    repo: &RepoName,
    need: Need,
) -> Result<Allowed, Failure> {
    authorize_with(state, peer, headers, repo, need)
        .await
        .map(|(allowed, _)| allowed)
}

/// [`authorize`], also returning the credentials (for checks again later in the same
/// request).
pub(super) async fn authorize_with(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    repo: &RepoName,
    need: Need,
) -> Result<(Allowed, Credentials), Failure> {
    use tracing::Instrument;
    let credentials = credentials(headers, state.proxy(peer))?;
    match state
        .access
        .authorize(&credentials, peer.ip(), repo, need)
        .instrument(tracing::info_span!("auth"))
        .await
    {
        Ok(Ok(allowed)) => Ok((allowed, credentials)),
        Ok(Err(refusal)) => Err(denied(refusal, Some(repo))),
        Err(e) => Err(access_failure(e)),
    }
}

/// Authenticates the request (for routes about no one repository); anonymous callers
/// are refused with `401`.
pub(super) async fn authenticate(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<(Caller, Arc<View>), Failure> {
    use tracing::Instrument;
    let credentials = credentials(headers, state.proxy(peer))?;
    match state
        .access
        .authenticate(&credentials, peer.ip())
        .instrument(tracing::info_span!("auth"))
        .await
    {
        Ok(Ok((caller, _))) if caller.user.is_none() && !caller.server_admin => {
            Err(Failure::Unauthorized)
        }
        Ok(Ok(found)) => Ok(found),
        Ok(Err(refusal)) => Err(denied(refusal, None)),
        Err(e) => Err(access_failure(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(value: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_bytes(value).expect("header value"),
        );
        h
    }

    fn token(c: Credentials) -> Option<String> {
        match c {
            Credentials::Token(t) => Some(t.expose().to_owned()),
            _ => None,
        }
    }

    #[test]
    fn tokens_come_from_basic_or_bearer() {
        let basic = |s: &str| {
            let v = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            );
            credentials(&with(v.as_bytes()), None).expect("valid")
        };
        assert_eq!(token(basic("alice:stw_x")).as_deref(), Some("stw_x"));
        assert_eq!(token(basic("stw_y:")).as_deref(), Some("stw_y"));
        assert!(matches!(basic(":"), Credentials::None));
        let bearer = credentials(&with(b"Bearer stw_z"), None).expect("valid");
        assert_eq!(token(bearer).as_deref(), Some("stw_z"));
        assert!(matches!(
            credentials(&with(b"Negotiate abc"), None).expect("ignored"),
            Credentials::None
        ));
        assert!(matches!(
            credentials(&HeaderMap::new(), None).expect("none"),
            Credentials::None
        ));
    }

    #[test]
    fn malformed_headers_are_refused() {
        let long = format!("Bearer {}", "a".repeat(MAX_AUTHORIZATION));
        for bad in [
            &b"Basic !!!"[..],
            b"Basic bm9jb2xvbg==", // "nocolon"
            b"Basic //79",         // not UTF-8
            b"Bearer",
            b"Basic \xff\xfe",
            long.as_bytes(),
        ] {
            assert!(
                credentials(&with(bad), None).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut two = with(b"Bearer a");
        two.append(header::AUTHORIZATION, HeaderValue::from_static("Bearer b"));
        assert!(credentials(&two, None).is_err());
    }

    #[test]
    fn a_trusted_proxy_names_the_user() {
        let name = HeaderName::from_static("x-remote-user");
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        let from = |peer: &str| {
            Some(Proxy {
                header: &name,
                trusted: &trusted,
                peer: peer.parse().expect("ip"),
            })
        };
        let mut h = HeaderMap::new();
        h.insert(&name, HeaderValue::from_static("alice"));
        assert!(matches!(
            credentials(&h, from("10.1.2.3")).expect("valid"),
            Credentials::ProxyUser(u) if u == "alice"
        ));
        assert!(matches!(
            credentials(&h, from("::ffff:10.1.2.3")).expect("valid"),
            Credentials::ProxyUser(_)
        ));
        assert!(
            credentials(&h, from("192.0.2.1")).is_err(),
            "not from a trusted proxy"
        );
        assert!(matches!(
            credentials(&h, None).expect("ignored without the option"),
            Credentials::None
        ));
        h.insert(&name, HeaderValue::from_static("../x"));
        assert!(credentials(&h, from("10.1.2.3")).is_err());
    }
}
