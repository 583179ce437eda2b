//! A small HTTP forward proxy on loopback for the tests of a lane's `proxy`: it serves
//! plain requests in absolute form (`GET http://host:port/path`) and `CONNECT` tunnels,
//! asks for a Basic password when given one (407, as real proxies do), and records each
//! request it forwards, so that a test can prove which traffic went through it.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A running proxy; dropping it stops it.
pub struct TestProxy {
    pub port: u16,
    seen: Arc<Mutex<Seen>>,
    task: JoinHandle<()>,
}

/// What the proxy saw.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// `METHOD target` of each request it forwarded.
    pub forwarded: Vec<String>,
    /// Requests refused with a 407 (no or wrong password).
    pub challenged: usize,
}

impl TestProxy {
    /// Starts a proxy on a free loopback port; with `credentials`, only requests that
    /// carry them are forwarded.
    pub async fn start(credentials: Option<(&str, &str)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let expected = credentials.map(|(user, password)| {
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            format!("Basic {token}")
        });
        let seen = Arc::new(Mutex::new(Seen::default()));
        let task = tokio::spawn({
            let seen = Arc::clone(&seen);
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    tokio::spawn(serve(client, expected.clone(), Arc::clone(&seen)));
                }
            }
        });
        Self { port, seen, task }
    }

    /// `http://[user:password@]127.0.0.1:<port>`.
    pub fn url(&self, credentials: Option<(&str, &str)>) -> String {
        match credentials {
            Some((user, password)) => format!("http://{user}:{password}@127.0.0.1:{}", self.port),
            None => format!("http://127.0.0.1:{}", self.port),
        }
    }

    pub fn seen(&self) -> Seen {
        self.seen.lock().expect("not poisoned").clone()
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One client connection: requests until one is forwarded (the connection then belongs
/// to that exchange, and closes with it).
async fn serve(client: TcpStream, expected: Option<String>, seen: Arc<Mutex<Seen>>) {
    let mut client = BufReader::new(client);
    loop {
        let Some(head) = read_head(&mut client).await else {
            return;
        };
        let mut lines = head.lines();
        let request_line = lines.next().unwrap_or_default().to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        if expected.is_some() && header("proxy-authorization") != expected.as_deref() {
            seen.lock().expect("not poisoned").challenged += 1;
            let refusal = "HTTP/1.1 407 Proxy Authentication Required\r\n\
                           Proxy-Authenticate: Basic realm=\"prq-test\"\r\nContent-Length: 0\r\n\r\n";
            if client
                .get_mut()
                .write_all(refusal.as_bytes())
                .await
                .is_err()
            {
                return;
            }
            continue;
        }
        let mut parts = request_line.split_whitespace();
        let (Some(method), Some(target), Some(version)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        seen.lock()
            .expect("not poisoned")
            .forwarded
            .push(format!("{method} {target}"));
        if method == "CONNECT" {
            let Ok(mut upstream) = TcpStream::connect(target).await else {
                let _ = client
                    .get_mut()
                    .write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
                    .await;
                return;
            };
            if client
                .get_mut()
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await
                .is_ok()
            {
                let _ = tokio::io::copy_bidirectional(client.get_mut(), &mut upstream).await;
            }
            return;
        }
        let Some(rest) = target.strip_prefix("http://") else {
            return;
        };
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let path = if path.is_empty() { "/" } else { path };
        let Ok(upstream) = TcpStream::connect(authority).await else {
            let _ = client
                .get_mut()
                .write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
                .await;
            return;
        };
        // One request per upstream connection, so that every request is seen here.
        let mut forwarded = format!("{method} {path} {version}\r\n");
        for (k, v) in &headers {
            if !matches!(
                k.as_str(),
                "proxy-authorization" | "proxy-connection" | "connection"
            ) {
                forwarded.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        forwarded.push_str("connection: close\r\n\r\n");
        let (mut up_read, mut up_write) = upstream.into_split();
        if up_write.write_all(forwarded.as_bytes()).await.is_err() {
            return;
        }
        let (client_read, mut client_write) = tokio::io::split(client);
        // A request body (a POST) follows the head; the answer ends the exchange.
        let body = tokio::spawn(async move {
            let mut client_read = client_read;
            let _ = tokio::io::copy(&mut client_read, &mut up_write).await;
        });
        let _ = tokio::io::copy(&mut up_read, &mut client_write).await;
        body.abort();
        return;
    }
}

/// Reads a request head, up to its blank line; `None` at the end of the connection.
async fn read_head(client: &mut BufReader<TcpStream>) -> Option<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = client.read_line(&mut line).await.ok()?;
        if n == 0 {
            return None;
        }
        if line == "\r\n" || line == "\n" {
            return Some(head);
        }
        head.push_str(&line);
        if head.len() > 64 * 1024 {
            return None;
        }
    }
}
