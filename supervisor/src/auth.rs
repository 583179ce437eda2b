//! Who may use what: API keys for `/v1/*`, the admin key (and its session cookie) for
//! the panel, the queue API and `/metrics`, and the client address allow-list.
//!
//! Keys are compared in constant time and never logged or shown; only their names are.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Mutex;

use anyhow::{bail, Context};
use axum::http::{header, HeaderMap};
use ipnet::IpNet;
use subtle::ConstantTimeEq;

use crate::config::Config;

/// The session cookie the panel gets after logging in with the admin key.
pub const SESSION_COOKIE: &str = "prq_session";

/// An address block, e.g. `10.0.0.0/8` or `::1/128` (a bare address is one host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(IpNet);

impl Cidr {
    pub fn parse(s: &str) -> Result<Self, String> {
        let text = s.trim();
        if let Ok(host) = text.parse::<IpAddr>() {
            return Ok(Self(IpNet::from(host)));
        }
        text.parse()
            .map(Self)
            .map_err(|_| match text.split_once('/') {
                Some((addr, _)) if addr.trim().parse::<IpAddr>().is_ok() => {
                    let max = if addr.contains(':') { 128 } else { 32 };
                    format!("{s:?}: the prefix length must be 0..={max}")
                }
                _ => format!("{s:?} is not an address or CIDR block (e.g. 10.0.0.0/8)"),
            })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.contains(&ip)
    }
}

/// Equal in constant time for keys of the same length; the length itself is not secret.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

fn read_key(path: &std::path::Path) -> anyhow::Result<String> {
    let key = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the key file {}", path.display()))?;
    let key = key.trim().to_string();
    if key.is_empty() {
        bail!("the key file {} is empty", path.display());
    }
    Ok(key)
}

pub struct Access {
    keys: Vec<(String, Vec<u8>)>,
    admin: Option<Vec<u8>>,
    allow: Vec<Cidr>,
    sessions: Mutex<HashSet<String>>,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No or a wrong API key.
    ApiKey,
    /// Not logged in as admin.
    Admin,
}

impl Access {
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let keys = config
            .keys
            .iter()
            .map(|k| {
                let key = match (&k.key, &k.key_file) {
                    (Some(key), _) => key.clone(),
                    (None, Some(path)) => read_key(path)?,
                    (None, None) => anyhow::bail!("key {:?} has neither key nor key_file", k.name),
                };
                Ok((k.name.clone(), key.into_bytes()))
            })
            .collect::<anyhow::Result<_>>()?;
        let admin = match (&config.admin_key, &config.admin_key_file) {
            (Some(k), _) => Some(k.clone().into_bytes()),
            (None, Some(path)) => Some(read_key(path)?.into_bytes()),
            (None, None) => None,
        };
        let allow = config
            .allow
            .iter()
            .map(|c| Cidr::parse(c).map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            keys,
            admin,
            allow,
            sessions: Mutex::default(),
        })
    }

    pub fn allowed(&self, ip: IpAddr) -> bool {
        self.allow.is_empty() || self.allow.iter().any(|c| c.contains(ip))
    }

    fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
        let value = headers.get(header::AUTHORIZATION)?.as_bytes();
        value
            .strip_prefix(b"Bearer ")
            .or_else(|| value.strip_prefix(b"bearer "))
    }

    /// The name of the API key a `/v1/*` request carries; `Ok(None)` when no keys are
    /// configured.
    pub fn client_key(&self, headers: &HeaderMap) -> Result<Option<String>, Refusal> {
        if self.keys.is_empty() {
            return Ok(None);
        }
        let given = Self::bearer(headers).ok_or(Refusal::ApiKey)?;
        // Compare with every key, so the time does not say which one matched.
        let mut found = None;
        for (name, key) in &self.keys {
            if ct_eq(given, key) {
                found = Some(name.clone());
            }
        }
        found.map(Some).ok_or(Refusal::ApiKey)
    }

    /// Admin access: the admin key as a bearer token, or a session cookie from
    /// [`Access::login`]. With no admin key configured, loopback clients are admin.
    pub fn check_admin(&self, headers: &HeaderMap, peer: IpAddr) -> Result<(), Refusal> {
        let Some(admin) = &self.admin else {
            return if peer.to_canonical().is_loopback() {
                Ok(())
            } else {
                Err(Refusal::Admin)
            };
        };
        if Self::bearer(headers).is_some_and(|b| ct_eq(b, admin)) {
            return Ok(());
        }
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let has_session = cookies(headers)
            .filter(|(name, _)| *name == SESSION_COOKIE)
            .any(|(_, value)| {
                sessions
                    .iter()
                    .any(|s| ct_eq(s.as_bytes(), value.as_bytes()))
            });
        if has_session {
            Ok(())
        } else {
            Err(Refusal::Admin)
        }
    }

    pub fn has_admin_key(&self) -> bool {
        self.admin.is_some()
    }

    /// A new session for the right admin key.
    pub fn login(&self, key: &str) -> Option<String> {
        let admin = self.admin.as_ref()?;
        if !ct_eq(key.as_bytes(), admin) {
            return None;
        }
        let token = random_token().ok()?;
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token.clone());
        Some(token)
    }

    /// A reload's new access takes over the panel sessions of `old` when the admin key
    /// is the same, so editing the config does not log everyone out; a new admin key
    /// ends them.
    pub fn carry_sessions(&self, old: &Access) {
        if self.admin != old.admin {
            return;
        }
        let kept = old
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        *self.sessions.lock().unwrap_or_else(|p| p.into_inner()) = kept;
    }

    pub fn logout(&self, headers: &HeaderMap) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        for (_, value) in cookies(headers).filter(|(n, _)| *n == SESSION_COOKIE) {
            sessions.remove(value);
        }
    }
}

fn cookies(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
}

/// Whether two secret tokens are equal, in constant time.
pub fn tokens_match(a: &str, b: &str) -> bool {
    ct_eq(a.as_bytes(), b.as_bytes())
}

/// 256 random bits from the OS, as hex: panel sessions and login-view tokens.
pub fn random_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether a state-changing request comes from a page of this server: an `Origin`
/// header, when present, must name the host the request was sent to.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        // Not a browser request from a page (curl, SDKs, the CLI): nothing to check.
        return true;
    };
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    origin.to_str().ok().is_some_and(|o| {
        o.strip_prefix("http://")
            .or_else(|| o.strip_prefix("https://"))
            .is_some_and(|rest| rest == host)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn access(toml: &str) -> Access {
        let config = Config::parse(&format!("{toml}\n[[lanes]]\nprovider = \"echo\"\n")).unwrap();
        Access::from_config(&config).unwrap()
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn cidrs_match_their_block_only() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert!(Cidr::parse("::1").unwrap().contains("::1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("example.com").is_err());
    }

    #[test]
    fn a_bad_block_is_named_with_what_is_wrong() {
        let prefix = Cidr::parse("10.0.0.0/33").unwrap_err();
        assert!(prefix.contains("prefix length must be 0..=32"), "{prefix}");
        let prefix = Cidr::parse("fd00::/129").unwrap_err();
        assert!(prefix.contains("prefix length must be 0..=128"), "{prefix}");
        let address = Cidr::parse("example.com/8").unwrap_err();
        assert!(
            address.contains("not an address or CIDR block"),
            "{address}"
        );
        // Host bits under the prefix do not matter, nor space around the block.
        let c = Cidr::parse(" 10.1.2.3/16 ").unwrap();
        assert!(c.contains("10.1.9.9".parse().unwrap()));
        assert!(!Cidr::parse("fd00::/8")
            .unwrap()
            .contains("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn api_keys_name_the_client_and_refuse_the_rest() {
        let a = access(
            "[[keys]]\nname = \"st\"\nkey = \"sk-one\"\n[[keys]]\nname = \"sdk\"\nkey = \"sk-two\"",
        );
        let ok = headers(&[(header::AUTHORIZATION, "Bearer sk-two")]);
        assert_eq!(a.client_key(&ok), Ok(Some("sdk".into())));
        let wrong = headers(&[(header::AUTHORIZATION, "Bearer sk-three")]);
        assert_eq!(a.client_key(&wrong), Err(Refusal::ApiKey));
        assert_eq!(a.client_key(&HeaderMap::new()), Err(Refusal::ApiKey));
        let open = access("");
        assert_eq!(open.client_key(&HeaderMap::new()), Ok(None));
    }

    #[test]
    fn admin_by_key_or_session_and_loopback_without_a_key() {
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let remote: IpAddr = "192.0.2.7".parse().unwrap();
        let open = access("");
        assert!(open.check_admin(&HeaderMap::new(), local).is_ok());
        assert!(open.check_admin(&HeaderMap::new(), remote).is_err());

        let a = access("admin_key = \"hunter2\"");
        assert!(a.check_admin(&HeaderMap::new(), local).is_err());
        assert!(a.login("wrong").is_none());
        let token = a.login("hunter2").unwrap();
        let cookie = headers(&[(
            header::COOKIE,
            &format!("theme=dark; {SESSION_COOKIE}={token}"),
        )]);
        assert!(a.check_admin(&cookie, remote).is_ok());
        let bearer = headers(&[(header::AUTHORIZATION, "Bearer hunter2")]);
        assert!(a.check_admin(&bearer, remote).is_ok());
        a.logout(&cookie);
        assert!(a.check_admin(&cookie, remote).is_err());
    }

    #[test]
    fn a_reload_keeps_panel_sessions_unless_the_admin_key_changed() {
        let remote: IpAddr = "192.0.2.7".parse().unwrap();
        let a = access("admin_key = \"hunter2\"");
        let token = a.login("hunter2").unwrap();
        let cookie = headers(&[(header::COOKIE, &format!("{SESSION_COOKIE}={token}"))]);
        let same = access("admin_key = \"hunter2\"\nallow = [\"10.0.0.0/8\"]");
        same.carry_sessions(&a);
        assert!(same.check_admin(&cookie, remote).is_ok());
        let rotated = access("admin_key = \"correct-horse\"");
        rotated.carry_sessions(&same);
        assert!(rotated.check_admin(&cookie, remote).is_err());
    }

    #[test]
    fn cross_site_posts_are_told_apart_by_their_origin() {
        let same = headers(&[
            (header::HOST, "127.0.0.1:8765"),
            (header::ORIGIN, "http://127.0.0.1:8765"),
        ]);
        assert!(same_origin(&same));
        let cross = headers(&[
            (header::HOST, "127.0.0.1:8765"),
            (header::ORIGIN, "https://evil.example"),
        ]);
        assert!(!same_origin(&cross));
        assert!(same_origin(&headers(&[(header::HOST, "127.0.0.1:8765")])));
    }
}
