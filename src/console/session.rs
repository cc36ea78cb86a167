//! Console sessions: an API token, checked once at sign-in, becomes a
//! random session id in an `HttpOnly`, `SameSite=Strict` cookie (`Secure`
//! over HTTPS); the token itself never reaches the browser again.
//!
//! Sessions live in the database (only the SHA-256 of each id), so any
//! replica serves any session and signing out ends it everywhere. A
//! session ends after `console_session_idle_secs` without a request,
//! `console_session_max_secs` after sign-in however busy, at sign-out,
//! when its token signs in again, or when its token leaves the
//! configuration (permissions are read from it at every request).

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::{ApiTokens, Caller};
use crate::store::{SessionStart, Store, StoreError};

pub const COOKIE: &str = "cobalt_console";

/// A signed-in user, as the handlers see them.
#[derive(Clone)]
pub struct Session {
    pub id: String,
    pub caller: Caller,
    /// The synchronizer token every form of this session carries: derived
    /// from the session id, so every replica knows it and a copy of the
    /// database does not.
    pub csrf: String,
}

impl Session {
    fn new(id: String, caller: Caller) -> Self {
        let mut mac = Hmac::<Sha256>::new_from_slice(id.as_bytes()).expect("any key length");
        mac.update(b"console csrf");
        let csrf = hex::encode(mac.finalize().into_bytes());
        Self { id, caller, csrf }
    }

    /// Whether a form's `csrf` field is this session's token.
    pub fn checks(&self, csrf: &str) -> bool {
        self.csrf.as_bytes().ct_eq(csrf.as_bytes()).into()
    }
}

pub struct Sessions {
    store: Store,
    tokens: Arc<ApiTokens>,
    idle: Duration,
    lifetime: Duration,
}

impl Sessions {
    pub fn new(store: Store, tokens: Arc<ApiTokens>, idle: Duration, lifetime: Duration) -> Self {
        Self {
            store,
            tokens,
            idle,
            lifetime,
        }
    }

    /// Starts a session for `caller`, ending the other one of its token.
    pub async fn start(&self, caller: Caller) -> Result<Session, StoreError> {
        let now = crate::clock::now_ns();
        let session = Session::new(random_token(), caller);
        self.store
            .start_session(SessionStart {
                id_sha256: id_digest(&session.id),
                token_name: session.caller.name.to_string(),
                now_ns: now,
                idle_before_ns: now.saturating_sub(nanos(self.idle)),
                started_before_ns: now.saturating_sub(nanos(self.lifetime)),
            })
            .await?;
        Ok(session)
    }

    /// The live session `id` names, its idle clock restarted.
    pub async fn get(&self, id: &str) -> Result<Option<Session>, StoreError> {
        let digest = id_digest(id);
        let Some(row) = self.store.session(&digest).await? else {
            return Ok(None);
        };
        let now = crate::clock::now_ns();
        let caller = self.tokens.caller_named(&row.token_name);
        let ended = now.saturating_sub(row.seen_ns) >= nanos(self.idle)
            || now.saturating_sub(row.started_ns) >= nanos(self.lifetime);
        let Some(caller) = caller.filter(|_| !ended) else {
            // Ended whether or not the row goes now (the next sign-in of
            // any token deletes ended rows).
            if let Err(error) = self.store.end_session(&digest).await {
                tracing::warn!(error = %error, "console: an ended session could not be deleted");
            }
            return Ok(None);
        };
        // The idle clock is kept to within a tenth of the idle time (at
        // most a minute), so a page view rarely costs a write; a database
        // that cannot take the write now leaves the clock where it was.
        let granularity = nanos(self.idle / 10).min(60_000_000_000);
        if now.saturating_sub(row.seen_ns) >= granularity {
            if let Err(error) = self.store.touch_session(&digest, now).await {
                tracing::warn!(error = %error, "console: a session's idle clock was not restarted");
            }
        }
        Ok(Some(Session::new(id.to_owned(), caller)))
    }

    pub async fn end(&self, id: &str) -> Result<(), StoreError> {
        self.store.end_session(&id_digest(id)).await
    }
}

/// What the database keeps of a session id.
fn id_digest(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

fn nanos(duration: Duration) -> i64 {
    i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)
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
/// browser session, the server ends it sooner.
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
    fn session_ids_are_random_and_kept_only_as_digests() {
        let (a, b) = (random_token(), random_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_ne!(id_digest(&a), a);
        assert_eq!(id_digest(&a), id_digest(&a));
    }
}
