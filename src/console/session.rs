//! Console sessions: an API token, checked once at sign-in, becomes a
//! random session id in an `HttpOnly`, `SameSite=Strict` cookie (`Secure`
//! over HTTPS); the token itself never reaches the browser again. Sessions
//! live in this process's memory and end after `console_session_idle_secs`
//! without a request, at sign-out, or when the process stops.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, header};
use subtle::ConstantTimeEq;

use crate::auth::Caller;

pub const COOKIE: &str = "cobalt_console";

/// A signed-in user, as the handlers see them.
#[derive(Clone)]
pub struct Session {
    pub id: String,
    pub caller: Caller,
    /// The synchronizer token every form of this session carries.
    pub csrf: String,
}

impl Session {
    /// Whether a form's `csrf` field is this session's token.
    pub fn checks(&self, csrf: &str) -> bool {
        self.csrf.as_bytes().ct_eq(csrf.as_bytes()).into()
    }
}

pub struct Sessions {
    idle: Duration,
    live: Mutex<HashMap<String, (Session, Instant)>>,
}

impl Sessions {
    pub fn new(idle: Duration) -> Self {
        Self {
            idle,
            live: Mutex::new(HashMap::new()),
        }
    }

    /// Starts a session for `caller`.
    pub fn start(&self, caller: Caller) -> Session {
        let session = Session {
            id: random_token(),
            caller,
            csrf: random_token(),
        };
        let now = Instant::now();
        let mut live = self.live.lock().expect("not poisoned");
        // Forget expired sessions now and then, so abandoned ones do not pile up.
        live.retain(|_, (_, seen)| now.duration_since(*seen) < self.idle);
        live.insert(session.id.clone(), (session.clone(), now));
        session
    }

    /// The live session `id` names, its idle clock restarted.
    pub fn get(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        let mut live = self.live.lock().expect("not poisoned");
        let (session, seen) = live.get_mut(id)?;
        if now.duration_since(*seen) >= self.idle {
            live.remove(id);
            return None;
        }
        *seen = now;
        Some(session.clone())
    }

    pub fn end(&self, id: &str) {
        self.live.lock().expect("not poisoned").remove(id);
    }
}

/// 256 random bits from the OS, as hex.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    hex::encode(bytes)
}

/// The session id the request's cookie holds.
pub fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// `Set-Cookie` for a new session. No `Max-Age`: the cookie ends with the
/// browser session, the server ends it sooner when idle.
pub fn session_cookie(session: &Session, https: bool) -> [(header::HeaderName, HeaderValue); 1] {
    let secure = if https { "; Secure" } else { "" };
    let value = format!(
        "{COOKIE}={}; Path=/ui; HttpOnly; SameSite=Strict{secure}",
        session.id
    );
    [(
        header::SET_COOKIE,
        HeaderValue::from_str(&value).expect("hex and fixed text"),
    )]
}

/// `Set-Cookie` that deletes the session cookie.
pub fn expired_cookie(https: bool) -> [(header::HeaderName, HeaderValue); 1] {
    let secure = if https { "; Secure" } else { "" };
    let value = format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0{secure}");
    [(
        header::SET_COOKIE,
        HeaderValue::from_str(&value).expect("fixed text"),
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; cobalt_console=abc; b=2"),
        );
        assert_eq!(cookie(&headers), Some("abc"));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("xcobalt_console=abc"),
        );
        assert_eq!(cookie(&headers), None);
    }

    #[test]
    fn session_ids_and_csrf_tokens_are_random_and_distinct() {
        let (a, b) = (random_token(), random_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
