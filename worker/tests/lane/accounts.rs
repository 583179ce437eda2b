//! A lane's account lives in its browser profile: cookies a site sets are still there
//! after the lane restarts, and a cookie export imported with `prq-worker
//! import-cookies` (what `prq login --import-cookies` runs) logs a lane in. Against a
//! replica whose login is its session cookie.

use std::path::Path;
use std::process::Output;

use prq_protocol::worker::{FailureKind, FinishReason, Thinking, ToWorker};

use crate::replica::{answer_pieces, Kind, Replica, SESSION_COOKIE};
use crate::support::{End, Lane, Setup, PROMPTLY};

async fn lane_on(replica: &Replica, profile: &Path) -> (Lane, Option<bool>) {
    let mut lane = Lane::start(Setup {
        profile_dir: Some(profile.to_owned()),
        ..Setup::site("deepseek", &replica.url)
    })
    .await;
    let (_, logged_in) = lane.ready_logged_in().await;
    (lane, logged_in)
}

async fn shut_down(mut lane: Lane) {
    lane.send(ToWorker::Shutdown).await;
    assert_eq!(lane.exit_within(PROMPTLY).await.code(), Some(0));
}

async fn import_cookies(profile: &Path, file: &Path) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_prq-worker"))
        .arg("import-cookies")
        .arg("--profile")
        .arg(profile)
        .arg("--file")
        .arg(file)
        .args(["--browser", "/usr/bin/chromium"])
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn cookies_a_site_sets_outlive_a_lane_restart() {
    let replica = Replica::serve(Kind::DeepSeek).await;
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("deepseek").join("default");

    let (lane, _) = lane_on(&replica, &profile).await;
    shut_down(lane).await;
    assert!(!replica.page_cookies()[0].contains("replica_visit"));

    let (lane, _) = lane_on(&replica, &profile).await;
    let seen = replica.page_cookies().pop().unwrap();
    assert!(
        seen.contains("replica_visit=1"),
        "the second run sent {seen:?}"
    );
    shut_down(lane).await;
}

#[tokio::test]
async fn an_imported_cookie_export_logs_the_lane_in() {
    let replica = Replica::serve(Kind::DeepSeek).await;
    replica.require_session();
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("profile");

    // Logged out: the lane says so, and a request says what to do.
    let (mut lane, logged_in) = lane_on(&replica, &profile).await;
    assert_eq!(logged_in, Some(false));
    lane.generate(1, "Hello?", Thinking::Off).await;
    let End::Failed(failure) = lane.answer(1).await.end else {
        panic!("a logged-out lane answered");
    };
    assert_eq!(failure.kind, FailureKind::NotLoggedIn);
    assert!(
        failure
            .message
            .contains("prq login deepseek --import-cookies FILE"),
        "{}",
        failure.message
    );

    // The profile is in use while the lane runs.
    let cookies = dir.path().join("cookies.json");
    let (name, value) = SESSION_COOKIE.split_once('=').unwrap();
    let export = serde_json::json!([
        {"domain": "127.0.0.1", "hostOnly": true, "name": name, "value": value, "path": "/",
         "expirationDate": 4102444800.0, "httpOnly": true, "secure": false, "sameSite": "lax",
         "session": false, "storeId": "0"},
        {"domain": "127.0.0.1", "hostOnly": true, "name": "pref", "value": "x", "path": "/",
         "httpOnly": false, "secure": false, "sameSite": "unspecified", "session": true}
    ]);
    std::fs::write(&cookies, export.to_string()).unwrap();
    let busy = import_cookies(&profile, &cookies).await;
    assert!(!busy.status.success());
    let stderr = String::from_utf8_lossy(&busy.stderr);
    assert!(stderr.contains("in use by a running browser"), "{stderr}");
    shut_down(lane).await;

    let imported = import_cookies(&profile, &cookies).await;
    let stdout = String::from_utf8_lossy(&imported.stdout);
    assert!(
        imported.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    assert!(
        stdout.contains("Imported 2 cookies for 127.0.0.1"),
        "{stdout}"
    );
    assert!(stdout.contains("1 of them had no expiry"), "{stdout}");

    let (mut lane, logged_in) = lane_on(&replica, &profile).await;
    assert_eq!(logged_in, Some(true));
    assert!(replica.page_cookies().pop().unwrap().contains("pref=x"));
    lane.generate(2, "Hello?\nreplica: words=1", Thinking::Off)
        .await;
    let got = lane.answer(2).await;
    assert_eq!(got.end, End::Finished(FinishReason::Completed));
    assert_eq!(got.answer, answer_pieces(1).concat());
    shut_down(lane).await;
}

#[tokio::test]
async fn a_file_that_is_no_cookie_export_is_refused_before_any_browser_starts() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cookies.txt");
    std::fs::write(&file, "# Netscape HTTP Cookie File\n").unwrap();
    let out = import_cookies(&dir.path().join("profile"), &file).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not a cookie export") && stderr.contains("JSON array"),
        "{stderr}"
    );
    assert!(!dir.path().join("profile").exists());
}
