//! Fetching an `image_url` part's `https` URL, as a server that fetches on a client's
//! behalf must: only `https`; every address a connection goes to is checked after
//! resolution (so a name that resolves to loopback, a private or a link-local address
//! is refused, however it is spelled, and a redirect cannot lead there either); at
//! most [`MAX_REDIRECTS`] redirects; a size cap that is the lane's per-file limit,
//! counted as the bytes arrive; one deadline for the whole fetch. The log names the
//! URL without its query, which often carries a signature or a token.
//!
//! `[attachments] fetch_allow` lists networks that are fetched from all the same (an
//! intranet image server; the tests' local server), and `extra_ca` a PEM file of
//! certificates to trust besides the public roots (a self-signed intranet server).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde::Deserialize;

use super::File;

/// Redirects followed at most.
const MAX_REDIRECTS: usize = 3;

/// `[attachments]`: how `https` images are fetched.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FetchConfig {
    /// Seconds one fetch may take, redirects included.
    pub fetch_timeout_s: f64,
    /// Networks fetched from although they are loopback or private (CIDR).
    pub fetch_allow: Vec<String>,
    /// A PEM file of certificates trusted besides the public roots.
    pub extra_ca: Option<PathBuf>,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            fetch_timeout_s: 20.0,
            fetch_allow: Vec::new(),
            extra_ca: None,
        }
    }
}

impl FetchConfig {
    /// The allowed networks, parsed; a bad one is named (the config check calls this).
    pub fn allowed(&self) -> Result<Vec<IpNet>, String> {
        self.fetch_allow
            .iter()
            .map(|n| {
                n.parse::<IpNet>()
                    .or_else(|_| n.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("[attachments] fetch_allow: `{n}` is not an address or a network like 10.0.0.0/8"))
            })
            .collect()
    }
}

/// Whether prq may connect to `ip` on a client's behalf.
fn reachable(ip: IpAddr, allowed: &[IpNet]) -> bool {
    allowed.iter().any(|n| n.contains(&ip)) || is_public(ip)
}

/// Not loopback, private, link-local, shared, unspecified, broadcast, multicast or
/// documentation space.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// Resolves as the system does and keeps only the addresses prq may connect to.
struct Guarded {
    allowed: Arc<Vec<IpNet>>,
}

impl Resolve for Guarded {
    fn resolve(&self, name: Name) -> Resolving {
        let allowed = self.allowed.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept: Vec<SocketAddr> = all
                .iter()
                .copied()
                .filter(|a| reachable(a.ip(), &allowed))
                .collect();
            if kept.is_empty() {
                return Err(format!(
                    "{host} resolves only to loopback, private or other non-public addresses ({}), which prq does not fetch from ([attachments] fetch_allow)",
                    all.iter().map(|a| a.ip().to_string()).collect::<Vec<_>>().join(", ")
                )
                .into());
            }
            let addrs: Addrs = Box::new(kept.into_iter());
            Ok(addrs)
        })
    }
}

/// The URL as logged: no query, no fragment, no user info.
fn shown(url: &reqwest::Url) -> String {
    format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.path()
    )
}

/// Whether a URL may be fetched before any connection: `https`, and a literal address
/// (which skips resolution) only if reachable.
fn check_url(url: &reqwest::Url, allowed: &[IpNet]) -> Result<(), String> {
    if url.scheme() != "https" {
        return Err(format!(
            "only https URLs are fetched, not {}: (or send the image as a data: URL)",
            url.scheme()
        ));
    }
    let literal = match url.host() {
        Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
        Some(url::Host::Domain(_)) => None,
        None => return Err("the URL has no host".into()),
    };
    match literal {
        Some(ip) if !reachable(ip, allowed) => Err(format!(
            "{ip} is a loopback, private or other non-public address, which prq does not fetch from ([attachments] fetch_allow)"
        )),
        _ => Ok(()),
    }
}

/// Fetches `url`, at most `max_bytes` of it.
pub(super) async fn fetch(config: &FetchConfig, url: &str, max_bytes: u64) -> Result<File, String> {
    let url = reqwest::Url::parse(url).map_err(|e| format!("not a URL ({e})"))?;
    let allowed = Arc::new(config.allowed()?);
    check_url(&url, &allowed)?;
    let redirect_allowed = allowed.clone();
    let policy = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
        }
        match check_url(attempt.url(), &redirect_allowed) {
            Ok(()) => attempt.follow(),
            Err(e) => {
                let to = shown(attempt.url());
                attempt.error(format!("a redirect to {to}: {e}"))
            }
        }
    });
    let timeout = Duration::from_secs_f64(config.fetch_timeout_s);
    let mut builder = reqwest::Client::builder()
        .redirect(policy)
        .dns_resolver(Arc::new(Guarded { allowed }))
        .timeout(timeout)
        .no_proxy();
    if let Some(ca) = &config.extra_ca {
        let pem = std::fs::read(ca)
            .map_err(|e| format!("cannot read [attachments] extra_ca {} ({e})", ca.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("[attachments] extra_ca {} is not PEM ({e})", ca.display()))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    let client = builder.build().map_err(|e| format!("internal: {e}"))?;
    let started = std::time::Instant::now();
    let got = tokio::time::timeout(timeout, read(&client, &url, max_bytes)).await;
    let result = got.unwrap_or_else(|_| {
        Err(format!(
            "it did not arrive within {} s ([attachments] fetch_timeout_s)",
            config.fetch_timeout_s
        ))
    });
    match &result {
        Ok(file) => {
            tracing::info!(url = %shown(&url), bytes = file.bytes.len(), ms = started.elapsed().as_millis() as u64, "attachment fetched")
        }
        Err(e) => tracing::info!(url = %shown(&url), "attachment fetch refused or failed: {e}"),
    }
    result
}

async fn read(
    client: &reqwest::Client,
    url: &reqwest::Url,
    max_bytes: u64,
) -> Result<File, String> {
    // reqwest's error text may carry the URL: its own message, without it.
    let failed = |e: reqwest::Error| {
        let e = e.without_url();
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message = format!("{message}: {s}");
            source = s.source();
        }
        message
    };
    let response = client.get(url.clone()).send().await.map_err(failed)?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("the server answered HTTP {status}"));
    }
    let too_big = || {
        format!("it is over the limit of {max_bytes} bytes per file (attachments.max_file_bytes)")
    };
    if response.content_length().is_some_and(|n| n > max_bytes) {
        return Err(too_big());
    }
    let final_url = response.url().clone();
    let mime = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    let mut bytes = Vec::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(failed)?;
        if bytes.len() as u64 + chunk.len() as u64 > max_bytes {
            return Err(too_big());
        }
        bytes.extend_from_slice(&chunk);
    }
    let name = final_url
        .path_segments()
        .and_then(|mut s| s.next_back())
        .filter(|s| !s.is_empty())
        .map(super::rules::safe_name);
    let mime = mime
        .filter(|m| m != "application/octet-stream")
        .or_else(|| name.as_deref().and_then(super::rules::mime_of_name))
        .unwrap_or_else(|| "application/octet-stream".into());
    Ok(File { name, mime, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_unless_allowed() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
        ] {
            let ip: IpAddr = private.parse().unwrap();
            assert!(!reachable(ip, &[]), "{private}");
        }
        for public in ["1.1.1.1", "2606:4700::1111"] {
            assert!(reachable(public.parse().unwrap(), &[]), "{public}");
        }
        let allowed = vec!["127.0.0.0/8".parse().unwrap()];
        assert!(reachable("127.0.0.1".parse().unwrap(), &allowed));
    }

    #[test]
    fn urls_are_https_and_not_literal_private_addresses() {
        let url = |u: &str| reqwest::Url::parse(u).unwrap();
        assert!(check_url(&url("http://example.com/a.png"), &[])
            .unwrap_err()
            .contains("https"));
        assert!(check_url(&url("https://127.0.0.1/a.png"), &[])
            .unwrap_err()
            .contains("127.0.0.1"));
        assert!(check_url(&url("https://[::1]:8443/a.png"), &[]).is_err());
        assert!(check_url(&url("https://example.com/a.png"), &[]).is_ok());
        assert_eq!(
            shown(&url("https://u:p@cdn.example/i/a.png?sig=secret#x")),
            "https://cdn.example/i/a.png"
        );
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused() {
        let e = fetch(&FetchConfig::default(), "https://localhost:9/a.png", 1000)
            .await
            .unwrap_err();
        assert!(e.contains("loopback"), "{e}");
    }
}
