//! Sending one delivery: a POST to a hook's URL that cannot be turned against the
//! server's own network.
//!
//! The host is resolved here and every address checked: loopback, private, link-local
//! (where cloud metadata services answer), CGNAT, multicast, documentation and other
//! non-public ranges are refused unless `--webhook-allow-private`, and the connection
//! goes to a checked address (the client is given the checked addresses, never the
//! name to resolve again). Redirects are not followed, proxies from the environment are
//! not used, and each attempt has a time limit.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::outbox::EXCERPT;

/// What came of one POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: Option<u16>,
    pub duration: Duration,
    pub response: String,
    pub error: Option<String>,
}

impl Outcome {
    pub fn delivered(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// Whether trying again cannot help (the destination is refused).
    pub fn refused(&self) -> bool {
        self.error
            .as_deref()
            .is_some_and(|e| e.contains(NOT_PUBLIC))
    }
}

const NOT_PUBLIC: &str = "is not a public address";

/// One request to a receiver.
#[derive(Debug)]
pub struct Request<'a> {
    pub url: &'a str,
    pub body: &'a [u8],
    pub headers: Vec<(&'static str, String)>,
}

/// The HTTP client of the deliverer.
#[derive(Debug, Clone)]
pub struct Sender {
    client: reqwest::Client,
    allow_private: bool,
}

impl Sender {
    pub fn new(allow_private: bool, timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(Checked { allow_private }))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(2)
            .user_agent(concat!("stowage-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the webhook client builds");
        Sender {
            client,
            allow_private,
        }
    }

    /// POSTs `request`, reading at most [`EXCERPT`] bytes of the answer.
    pub async fn post(&self, request: Request<'_>) -> Outcome {
        let started = Instant::now();
        let failed = |error: String| Outcome {
            status: None,
            duration: started.elapsed(),
            response: String::new(),
            error: Some(error),
        };
        let url = match url::Url::parse(request.url) {
            Ok(url) => url,
            Err(e) => return failed(format!("invalid URL: {e}")),
        };
        // A literal address is not resolved, so it is checked here.
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = literal
            && !self.allow_private
            && !is_public(ip)
        {
            return failed(format!(
                "{ip} {NOT_PUBLIC} (--webhook-allow-private allows it)"
            ));
        }
        let mut builder = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .body(request.body.to_vec());
        for (name, value) in request.headers {
            builder = builder.header(name, value);
        }
        match builder.send().await {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let mut excerpt = Vec::new();
                while excerpt.len() < EXCERPT {
                    match response.chunk().await {
                        Ok(Some(chunk)) => excerpt.extend_from_slice(&chunk),
                        _ => break,
                    }
                }
                excerpt.truncate(EXCERPT);
                Outcome {
                    status: Some(status),
                    duration: started.elapsed(),
                    response: String::from_utf8_lossy(&excerpt).into_owned(),
                    error: None,
                }
            }
            Err(e) => failed(describe(&e.without_url())),
        }
    }
}

/// Checks, when a hook is added, that its URL reaches a public address (or that
/// private ones are allowed): the name is resolved now, and again at every delivery.
pub async fn check_destination(url: &str, allow_private: bool) -> Result<(), String> {
    if allow_private {
        return Ok(());
    }
    let parsed = url::Url::parse(url).map_err(|e| format!("invalid URL {url:?}: {e}"))?;
    let port = parsed.port_or_known_default().unwrap_or(443);
    let addrs: Vec<IpAddr> = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
        Some(url::Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
        Some(url::Host::Domain(host)) => match tokio::net::lookup_host((host, port)).await {
            Ok(found) => found.map(|a| a.ip()).collect(),
            // A name that does not resolve yet may later; deliveries check again.
            Err(_) => return Ok(()),
        },
        None => return Err(format!("invalid URL {url:?}: it names no host")),
    };
    match addrs.iter().find(|ip| !is_public(**ip)) {
        Some(ip) => Err(format!(
            "the webhook URL's host is {ip}, which {NOT_PUBLIC} (the server allows it with \
             --webhook-allow-private)"
        )),
        None => Ok(()),
    }
}

/// An error with its causes, on one line.
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// The resolver of the client: the system's, with non-public addresses taken out.
#[derive(Debug)]
struct Checked {
    allow_private: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

impl reqwest::dns::Resolve for Checked {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| allow_private || is_public(a.ip()))
                .collect();
            if public.is_empty() {
                let list: Vec<String> = found.iter().map(|a| a.ip().to_string()).collect();
                let message = match list.is_empty() {
                    true => format!("{host} has no address"),
                    false => format!(
                        "{host} resolves to {}, which {NOT_PUBLIC} (--webhook-allow-private \
                         allows it)",
                        list.join(", ")
                    ),
                };
                return Err(Box::new(Refused(message)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Address ranges a webhook may not reach: not public (RFC 6890 and successors).
const NOT_PUBLIC_RANGES: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/96",
    "::1/128",
    "64:ff9b:1::/48",
    "100::/64",
    "2001::/23",
    "2001:db8::/32",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
];

/// Whether `ip` is a public address: not in [`NOT_PUBLIC_RANGES`], and for IPv6
/// forms that carry an IPv4 address (mapped, NAT64, 6to4), that address public too.
pub fn is_public(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if let Some(v4) = v6.to_ipv4_mapped() {
                IpAddr::V4(v4)
            } else if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                // NAT64 (64:ff9b::/96).
                IpAddr::V4(std::net::Ipv4Addr::new(
                    (s[6] >> 8) as u8,
                    s[6] as u8,
                    (s[7] >> 8) as u8,
                    s[7] as u8,
                ))
            } else if s[0] == 0x2002 {
                // 6to4 (2002::/16) carries the IPv4 address in the next 32 bits.
                IpAddr::V4(std::net::Ipv4Addr::new(
                    (s[1] >> 8) as u8,
                    s[1] as u8,
                    (s[2] >> 8) as u8,
                    s[2] as u8,
                ))
            } else {
                ip
            }
        }
        v4 => v4,
    };
    !NOT_PUBLIC_RANGES.iter().any(|range| {
        range
            .parse::<IpNet>()
            .expect("the ranges are valid")
            .contains(&ip)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.20.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "2001:db8::1",
            "::7f00:1",
            "64:ff9b:1::a00:1",
        ] {
            assert!(!is_public(private.parse().expect("ip")), "{private}");
        }
        for public in ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(is_public(public.parse().expect("ip")), "{public}");
        }
    }

    #[tokio::test]
    async fn private_destinations_are_refused_before_connecting() {
        let sender = Sender::new(false, Duration::from_secs(2));
        for url in [
            "http://127.0.0.1:9/hook",
            "http://[::1]:9/hook",
            "http://localhost:9/hook",
            "http://169.254.169.254/latest/meta-data/",
        ] {
            let outcome = sender
                .post(Request {
                    url,
                    body: b"{}",
                    headers: Vec::new(),
                })
                .await;
            assert!(outcome.refused(), "{url}: {outcome:?}");
            assert_eq!(outcome.status, None);
        }
    }
}
