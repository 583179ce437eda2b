//! A lane's proxy: `http://[user:password@]host:port` or `socks5://host:port`, read once
//! here for both the config check (supervisor) and the browser launch (worker).
//!
//! Chromium takes the proxy as `--proxy-server=scheme://host:port` and never takes
//! credentials there: an HTTP proxy's are given when it asks (a 407 challenge, answered
//! over DevTools), and SOCKS5 with a password is not supported by Chromium at all
//! (its SOCKS client speaks no username/password authentication), so it is refused.

use std::fmt;

/// The schemes Chromium's `--proxy-server` takes that a lane may use.
pub const SCHEMES: &[&str] = &["http", "https", "socks5"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    pub scheme: String,
    pub host: String,
    pub port: u16,
    /// User and password, percent-decoded.
    pub credentials: Option<(String, String)>,
}

impl Proxy {
    pub fn parse(url: &str) -> Result<Self, String> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            format!("proxy {url:?} is not a URL; write e.g. \"http://host:8080\" or \"socks5://host:1080\"")
        })?;
        let scheme = scheme.to_ascii_lowercase();
        if !SCHEMES.contains(&scheme.as_str()) {
            return Err(format!(
                "proxy scheme {scheme:?} is not one Chromium takes for a lane (use {})",
                SCHEMES.join(", ")
            ));
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('?') || rest.contains('#') {
            return Err("a proxy URL has no path: write scheme://host:port".into());
        }
        let (credentials, address) = match rest.rsplit_once('@') {
            Some((userinfo, address)) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let credentials = (percent_decode(user)?, percent_decode(password)?);
                if credentials.0.is_empty() {
                    return Err("the proxy URL has an '@' but no user name".into());
                }
                (Some(credentials), address)
            }
            None => (None, rest),
        };
        if credentials.is_some() && scheme == "socks5" {
            return Err(
                "Chromium cannot log in to a SOCKS5 proxy (it has no SOCKS username/password \
                 support): use one without a password, or an http:// proxy with user:password@"
                    .into(),
            );
        }
        let (host, port) = address
            .rsplit_once(':')
            .ok_or_else(|| format!("the proxy URL needs a port: {scheme}://host:PORT"))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| format!("the proxy port {port:?} is not a port number"))?;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let valid = !bare.is_empty()
            && bare
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:_".contains(c));
        if !valid {
            return Err(format!(
                "the proxy host {host:?} is not a host name or address"
            ));
        }
        Ok(Self {
            scheme,
            host: host.to_owned(),
            port,
            credentials,
        })
    }

    /// `scheme://host:port`, as `--proxy-server` takes it.
    pub fn server(&self) -> String {
        format!("{}://{}:{}", self.scheme, self.host, self.port)
    }

    /// `host:port`, to connect to.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// The URL with its password masked: fit for logs and `prq status`.
impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.credentials {
            Some((user, _)) => write!(
                f,
                "{}://{user}:***@{}:{}",
                self.scheme, self.host, self.port
            ),
            None => f.write_str(&self.server()),
        }
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a '%' in the proxy's user or password is not followed by two hex digits")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the proxy's user or password is not UTF-8".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxies_are_read_and_shown_without_their_password() {
        let p = Proxy::parse("http://me:p%40ss@proxy.example:3128").unwrap();
        assert_eq!(p.server(), "http://proxy.example:3128");
        assert_eq!(p.credentials, Some(("me".into(), "p@ss".into())));
        assert_eq!(p.to_string(), "http://me:***@proxy.example:3128");
        let s = Proxy::parse("socks5://127.0.0.1:1080/").unwrap();
        assert_eq!(
            (s.server(), s.credentials),
            ("socks5://127.0.0.1:1080".into(), None)
        );
    }

    #[test]
    fn bad_proxies_are_refused_with_the_reason() {
        for (url, says) in [
            ("proxy:8080", "not a URL"),
            ("ftp://h:1", "scheme"),
            ("http://h", "needs a port"),
            ("http://h:0", "not a port"),
            ("http://h:80/path", "no path"),
            ("socks5://u:p@h:1080", "SOCKS5"),
            ("http://:pw@h:80", "no user"),
        ] {
            let e = Proxy::parse(url).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
        }
    }
}
