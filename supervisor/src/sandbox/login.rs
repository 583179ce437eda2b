//! The sandbox site's login, for lanes with `login = true`: their page asks for a user
//! and a password (any non-empty pair is taken) until someone logs in, as a real site
//! does for a lane whose session is gone. Logging in sets a session cookie, kept for
//! 30 days with "remember me" (so it lives in the lane's profile across restarts),
//! else until the browser closes. A lane opens the site as `/?account=NAME&login=1`;
//! without `login=1` the site asks for nothing. `DELETE /login` ends every session, as
//! a site does with sessions left idle too long (the keep-alive test uses it).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

const PAGE: &str = include_str!("login.html");

/// What a lane sees of the login page: the selector the lane's `logged_out` is set to.
pub const LOGGED_OUT: &str = "form#login";

/// The cookie a login sets.
const SESSION_COOKIE: &str = "prq_sandbox_login";

/// How long "remember me" keeps the login.
const REMEMBER_S: u64 = 30 * 24 * 3600;

/// The page a sandbox lane opens: its account, and whether the site asks it to log in.
pub fn page_url(sandbox_url: &str, account: &str, login: bool) -> String {
    let login = if login { "&login=1" } else { "" };
    format!("{sandbox_url}?account={account}{login}")
}

/// The site's live login sessions, by cookie value.
#[derive(Clone, Default)]
pub struct Sessions(Arc<Mutex<HashSet<String>>>);

impl Sessions {
    fn live(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        // A set stays consistent whatever a holder did.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a page request must see the login form instead of the chat.
    pub fn required(&self, asked: bool, headers: &HeaderMap) -> bool {
        asked && !self.logged_in(headers)
    }

    fn logged_in(&self, headers: &HeaderMap) -> bool {
        let live = self.live();
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().strip_prefix(SESSION_COOKIE)?.strip_prefix('='))
            .any(|token| live.contains(token))
    }
}

/// The login form, for `account` (a checked account name, or empty), with an error line.
pub fn form(status: StatusCode, account: &str, error: Option<&str>) -> Response {
    let error = error.map_or_else(String::new, |e| {
        format!("<p class=\"error\" id=\"error\">{e}</p>")
    });
    let page = PAGE
        .replace("<!--ERROR-->", &error)
        .replace("<!--ACCOUNT-->", account);
    (status, Html(page)).into_response()
}

#[derive(Deserialize)]
pub(super) struct Login {
    #[serde(default)]
    account: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    remember: Option<String>,
}

/// `POST /login`: any non-empty user and password log the browser in, and it goes on
/// to the chat page (at `/chat`, so that its URL tells it from the login page's).
pub(super) async fn submit(
    State(sandbox): State<super::Sandbox>,
    Form(login): Form<Login>,
) -> Response {
    let account = super::checked_account(Some(login.account)).unwrap_or_default();
    if login.user.trim().is_empty() || login.password.is_empty() {
        return form(
            StatusCode::BAD_REQUEST,
            &account,
            Some("Enter a user and a password."),
        );
    }
    let Ok(token) = crate::auth::random_token() else {
        return form(
            StatusCode::INTERNAL_SERVER_ERROR,
            &account,
            Some("No randomness for a session; try again."),
        );
    };
    sandbox.sessions.live().insert(token.clone());
    let kept = match login.remember {
        Some(_) => format!("; Max-Age={REMEMBER_S}"),
        None => String::new(),
    };
    let back = match account.as_str() {
        "" => "/chat?login=1".to_owned(),
        account => format!("/chat?account={account}&login=1"),
    };
    (
        StatusCode::SEE_OTHER,
        [
            (
                header::SET_COOKIE,
                format!("{SESSION_COOKIE}={token}; Path=/; SameSite=Lax; HttpOnly{kept}"),
            ),
            (header::LOCATION, back),
        ],
    )
        .into_response()
}

/// `DELETE /login`: ends every session; the next page load asks for a login again.
pub(super) async fn end_all(State(sandbox): State<super::Sandbox>) -> StatusCode {
    sandbox.sessions.live().clear();
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn the_form_is_asked_for_until_a_live_session_is_there() {
        let sessions = Sessions::default();
        let mut headers = HeaderMap::new();
        assert!(sessions.required(true, &headers));
        assert!(
            !sessions.required(false, &headers),
            "a lane without login = true"
        );
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("prq_sandbox_account=a; prq_sandbox_login=t1"),
        );
        assert!(
            sessions.required(true, &headers),
            "a session the site does not know"
        );
        sessions.live().insert("t1".into());
        assert!(!sessions.required(true, &headers));
        sessions.live().clear();
        assert!(sessions.required(true, &headers), "ended");
        assert_eq!(
            page_url("http://127.0.0.1:9/", "a", true),
            "http://127.0.0.1:9/?account=a&login=1"
        );
        assert_eq!(
            page_url("http://127.0.0.1:9/", "a", false),
            "http://127.0.0.1:9/?account=a"
        );
    }
}
