//! Attachments end to end: `image_url` and `file` parts through the real prq, the
//! worker's upload through the sandbox page's own file input in headless Chromium, and
//! the sandbox's report of each file's name, size and sha256 in its answer; refusals,
//! limits, and no file left behind by a stop or a crashed browser.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use nix::sys::signal::Signal;
use prq_tests::{config, eventually, signal, Prq, Streamed};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// An echo lane and a sandbox lane; `extra` goes after the sandbox's `[[lanes]]`.
fn lane(extra: &str) -> Prq {
    let cfg = config("concurrent", &[("echo", "e", "x"), ("sandbox", "s", "a")]);
    Prq::start(&format!("{cfg}{extra}"))
}

/// The answer line the sandbox gives for a file.
fn line(name: &str, bytes: &[u8]) -> String {
    let sha: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("attached: {name} {} {sha}", bytes.len())
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn image(bytes: &[u8]) -> Value {
    json!({"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{}", b64(bytes))}})
}

/// Bytes that differ from run to run and file to file.
fn noise(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[3] ^ seed)
        .collect()
}

async fn post(prq: &Prq, body: Value) -> (u16, Value) {
    let r = prq
        .http()
        .post(format!("{}/v1/chat/completions", prq.api))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn answer(body: &Value) -> &str {
    body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no answer: {body}"))
}

/// What is left under `PRQ_HOME/uploads`.
fn left_in_uploads(home: &Path) -> Vec<String> {
    std::fs::read_dir(home.join("uploads"))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path().display().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn images_and_a_pdf_reach_the_site_byte_exact() {
    let prq = lane("");
    let text = "What is wrong here?\nsandbox: tokens=2 delay_ms=0";

    let one = noise(200_000, 1);
    let body = json!({"model": "s-chat", "messages": [{"role": "user", "content": [
        {"type": "text", "text": text}, image(&one)]}]});
    let (status, reply) = post(&prq, body).await;
    assert_eq!(status, 200, "{reply}");
    let got = answer(&reply);
    assert!(
        got.starts_with(&format!("{}\n{text}", line("attachment-1.png", &one))),
        "{got}"
    );

    // Three images, and an image in an earlier turn that is not sent again (the
    // default history) but leaves a placeholder in the conversation.
    let three: Vec<Vec<u8>> = (0..3).map(|i| noise(50_000 + i * 7, i as u8 + 2)).collect();
    let mut content = vec![json!({"type": "text", "text": text})];
    content.extend(three.iter().map(|b| image(b)));
    let body = json!({"model": "s-chat", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "before"}, image(b"old")]},
        {"role": "assistant", "content": "seen"},
        {"role": "user", "content": content}]});
    let (status, reply) = post(&prq, body).await;
    assert_eq!(status, 200, "{reply}");
    let lines: Vec<&str> = answer(&reply).lines().take(3).collect();
    let want: Vec<String> = three
        .iter()
        .enumerate()
        .map(|(i, b)| line(&format!("attachment-{}.png", i + 1), b))
        .collect();
    assert_eq!(lines, want);
    let streams = prq.sandbox_streams().await;
    let last = streams.last().unwrap();
    assert_eq!(last["attachments"].as_array().unwrap().len(), 3);

    // A PDF as a file part keeps its name.
    let pdf = [b"%PDF-1.4\n".as_slice(), &noise(30_000, 9)].concat();
    let body = json!({"model": "s-chat", "messages": [{"role": "user", "content": [
        {"type": "text", "text": text},
        {"type": "file", "file": {"filename": "report.pdf", "file_data": b64(&pdf)}}]}]});
    let (status, reply) = post(&prq, body).await;
    assert_eq!(status, 200, "{reply}");
    assert!(
        answer(&reply).starts_with(&line("report.pdf", &pdf)),
        "{reply}"
    );

    assert!(
        left_in_uploads(prq.home()).is_empty(),
        "{:?}",
        left_in_uploads(prq.home())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_name_the_part_the_limit_and_the_provider() {
    let prq = lane("\n[lanes.attachments]\nmax_files = 2\n");
    let text = |t: &str| json!({"type": "text", "text": t});

    // The site refuses the upload: its words reach the client.
    let body = json!({"model": "s-chat", "messages": [{"role": "user", "content": [
        text("sandbox: reject_upload=1"), image(b"png")]}]});
    let (status, reply) = post(&prq, body).await;
    assert_eq!(status, 502, "{reply}");
    assert_eq!(reply["error"]["code"], "upload_rejected");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("was refused (reject_upload=1)"),
        "{message}"
    );

    // Over the lane's count (this config's max_files = 2).
    let body = json!({"model": "s-chat", "messages": [{"role": "user", "content": [
        text("three"), image(b"1"), image(b"2"), image(b"3")]}]});
    let (status, reply) = post(&prq, body).await;
    assert_eq!(status, 400, "{reply}");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("messages[0].content[3]")
            && message.contains("max_files")
            && message.contains("`sandbox`"),
        "{message}"
    );

    // A type the echo lane's provider does not take; audio at all.
    let body = json!({"model": "e-chat", "messages": [{"role": "user", "content": [image(b"1")]}]});
    let (status, reply) = post(&prq, body).await;
    assert_eq!(status, 400, "{reply}");
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("`echo`"));
    let body = json!({"model": "s-chat", "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}]});
    let (status, reply) = post(&prq, body).await;
    assert_eq!(status, 400, "{reply}");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("messages[0].content[0]") && message.contains("input_audio"),
        "{message}"
    );

    // An https URL that resolves to loopback is not fetched.
    let body = json!({"model": "s-chat", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://localhost:1/a.png?token=secret"}}]}]});
    let (status, reply) = post(&prq, body).await;
    assert_eq!(status, 400, "{reply}");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(message.contains("loopback"), "{message}");
    assert!(
        !prq.daemon_log().contains("secret"),
        "the query is not logged"
    );

    // The lane still answers, and nothing is left.
    let (status, reply) = prq
        .chat("s-chat", "still here\nsandbox: tokens=1 delay_ms=0")
        .await;
    assert_eq!(status, 200, "{reply}");
    assert!(left_in_uploads(prq.home()).is_empty());
}

/// Starts a request whose upload the sandbox holds for 20 s; returns its response and
/// ID once it is processing.
async fn held_upload(prq: &Prq) -> (reqwest::Response, u64) {
    let body = json!({"model": "s-chat", "stream": true, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "slow\nsandbox: upload_delay_ms=20000 tokens=1 delay_ms=0"},
        image(&noise(100_000, 5))]}]});
    let r = prq
        .http()
        .post(format!("{}/v1/chat/completions", prq.api))
        .json(&body)
        .send()
        .await
        .unwrap();
    let id = prq_tests::request_id(&r).unwrap();
    prq.first_live("processing").await;
    // The file is in the request's directory while it uploads.
    assert_eq!(left_in_uploads(prq.home()).len(), 1);
    (r, id)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_a_stop_or_a_crashed_browser_during_an_upload_leaves_no_file() {
    let prq = lane("");
    let (r, id) = held_upload(&prq).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A request with an image waits behind it; cancelled, its files go at once.
    let waiting = prq
        .http()
        .post(format!("{}/v1/chat/completions", prq.api))
        .json(
            &json!({"model": "s-chat", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "waits"}, image(b"queued")]}]}),
        )
        .send();
    let waiting = tokio::spawn(waiting);
    let queued = prq.first_live("pending").await;
    assert_eq!(left_in_uploads(prq.home()).len(), 2);
    let (status, _) = prq.post(&format!("/api/queue/{queued}/cancel")).await;
    assert_eq!(status, 200);
    let cancelled = waiting.await.unwrap().unwrap();
    assert_eq!(cancelled.status(), 409);
    assert_eq!(left_in_uploads(prq.home()).len(), 1, "the held one's stays");

    let (status, _) = prq.post(&format!("/api/queue/{id}/stop")).await;
    assert_eq!(status, 200);
    let s = Streamed::read(r).await;
    assert_eq!(
        s.error.as_ref().map(|e| e["error"]["code"].clone()),
        Some(json!("request_stopped")),
        "{:?}",
        s.error
    );
    eventually(Duration::from_secs(10), || async {
        left_in_uploads(prq.home()).is_empty()
    })
    .await
    .expect("the stopped request's files removed");
    // The next request does not send the stopped one's file.
    let (status, reply) = prq
        .chat("s-chat", "next\nsandbox: tokens=1 delay_ms=0")
        .await;
    assert_eq!(status, 200, "{reply}");
    assert!(answer(&reply).starts_with("next"), "{reply}");

    // A client that goes away mid-upload stops its request, and its files go.
    let (r, gone) = held_upload(&prq).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(r);
    prq.until_state(gone, "stopped").await;
    eventually(Duration::from_secs(10), || async {
        left_in_uploads(prq.home()).is_empty()
    })
    .await
    .expect("the abandoned request's files removed");

    let (r, _) = held_upload(&prq).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let browser = prq.lane("s#1")["browser_pid"].as_u64().unwrap();
    signal(browser, Signal::SIGKILL);
    let s = Streamed::read(r).await;
    let code = s.error.as_ref().map(|e| e["error"]["code"].clone());
    assert_eq!(code, Some(json!("lane_crashed")), "{:?}", s.error);
    eventually(Duration::from_secs(10), || async {
        left_in_uploads(prq.home()).is_empty()
    })
    .await
    .expect("the crashed request's files removed");
}

#[test]
fn the_openai_python_sdk_sends_an_image() {
    let prq = lane("");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/sdk/openai_image.py");
    let png = noise(40_000, 7);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shot.png");
    std::fs::write(&path, &png).unwrap();
    let out = std::process::Command::new("python3")
        .args([
            script,
            &format!("{}/v1", prq.api),
            "s-chat",
            path.to_str().unwrap(),
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the SDK script failed (pip install openai):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    let content = seen["content"].as_str().unwrap();
    assert!(
        content.starts_with(&line("attachment-1.png", &png)),
        "{content}"
    );
}

/// An https server on loopback with a certificate from a CA of its own: the
/// honest stand-in for an image host, since prq refuses loopback unless
/// `[attachments] fetch_allow` names it and trusts the CA only through `extra_ca`.
struct TlsServer {
    child: std::process::Child,
    port: u16,
    ca: std::path::PathBuf,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TlsServer {
    /// Serves the files of `root` over https on 127.0.0.1.
    fn serve(root: &Path) -> Self {
        let openssl = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(root)
                .output()
                .expect("openssl runs");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=prq test CA",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign",
                ],
            ]
            .concat(),
        );
        openssl(
            &[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    "leaf.key",
                    "-out",
                    "leaf.csr",
                    "-subj",
                    "/CN=localhost",
                ],
            ]
            .concat(),
        );
        std::fs::write(root.join("leaf.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n").unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
        ]);
        let script = "import http.server, ssl, sys\n\
            server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), http.server.SimpleHTTPRequestHandler)\n\
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
            context.load_cert_chain('leaf.pem', 'leaf.key')\n\
            server.socket = context.wrap_socket(server.socket, server_side=True)\n\
            print(server.server_address[1], flush=True)\n\
            server.serve_forever()\n";
        let mut child = std::process::Command::new("python3")
            .args(["-c", script])
            .current_dir(root)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 runs");
        let mut first = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut first,
        )
        .unwrap();
        let port = first.trim().parse().expect("the server's port");
        Self {
            child,
            port,
            ca: root.join("ca.pem"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_https_image_is_fetched_from_an_allowed_host_and_its_query_is_not_logged() {
    let root = tempfile::tempdir().unwrap();
    let png = noise(300_000, 11);
    std::fs::write(root.path().join("shot.png"), &png).unwrap();
    let server = TlsServer::serve(root.path());
    let prq = lane(&format!(
        "\n[attachments]\nfetch_allow = [\"127.0.0.0/8\", \"::1\"]\nextra_ca = \"{}\"\n",
        server.ca.display()
    ));
    let url = format!("https://localhost:{}/shot.png?sig=topsecret", server.port);
    let body = json!({"model": "s-chat", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "and this?\nsandbox: tokens=1 delay_ms=0"},
        {"type": "image_url", "image_url": {"url": url, "detail": "auto"}}]}]});
    let (status, reply) = post(&prq, body).await;
    assert_eq!(status, 200, "{reply}");
    assert!(
        answer(&reply).starts_with(&line("shot.png", &png)),
        "{reply}"
    );
    let log = prq.daemon_log();
    assert!(log.contains("attachment fetched"), "{log}");
    assert!(!log.contains("topsecret"), "the query is not logged");

    // A file the server does not have: the part and the server's answer are named.
    let url = format!("https://localhost:{}/nothing.png", server.port);
    let body = json!({"model": "s-chat", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}}]}]});
    let (status, reply) = post(&prq, body).await;
    assert_eq!(status, 400, "{reply}");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("messages[0].content[0]") && message.contains("404"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conversation_over_long_prompt_chars_goes_as_a_text_file() {
    use prq_protocol::worker::{ChatMessage, Role};
    let prq = lane("\n[lanes.attachments]\nlong_prompt = \"file\"\nlong_prompt_chars = 5000\n");
    let story = "Once upon a time, ünïcode and\n\n  indentation.\n".repeat(200);
    let ask = "Summarise it.\nsandbox: tokens=1 delay_ms=0";
    let body = json!({"model": "s-chat", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": story},
        {"role": "assistant", "content": "Go on."},
        {"role": "user", "content": ask}]});
    let (status, reply) = post(&prq, body).await;
    assert_eq!(status, 200, "{reply}");
    let message = |role, content: &str| ChatMessage {
        role,
        content: content.to_string(),
    };
    let conversation = prq_protocol::prompt::flatten(&[
        message(Role::System, "be brief"),
        message(Role::User, &story),
        message(Role::Assistant, "Go on."),
        message(Role::User, ask),
    ]);
    let got = answer(&reply);
    let mut lines = got.lines();
    assert_eq!(
        lines.next(),
        Some(line("conversation.txt", conversation.as_bytes()).as_str())
    );
    let typed = lines.next().unwrap();
    assert!(
        typed.starts_with("The conversation so far is in the attached file conversation.txt"),
        "{typed}"
    );

    // Under the threshold, the conversation is typed as before.
    let (status, reply) = prq.chat("s-chat", ask).await;
    assert_eq!(status, 200, "{reply}");
    assert!(answer(&reply).starts_with(ask), "{reply}");
    assert!(left_in_uploads(prq.home()).is_empty());
}

/// A site whose file input cannot be found by selector gets its files through the
/// file chooser its attach button opens (intercepted: no dialog).
#[tokio::test(flavor = "multi_thread")]
async fn files_go_through_the_file_chooser_when_the_input_is_not_found() {
    let prq = lane("\n[lanes.selectors]\nattach_input = \"input#not-on-this-page\"\n");
    let png = noise(80_000, 21);
    let body = json!({"model": "s-chat", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "chooser\nsandbox: tokens=1 delay_ms=0"}, image(&png)]}]});
    let (status, reply) = post(&prq, body).await;
    assert_eq!(status, 200, "{reply}");
    assert!(
        answer(&reply).starts_with(&line("attachment-1.png", &png)),
        "{reply}"
    );
}
