//! One attempt to deliver a message to an endpoint, and what came of it.
//!
//! Redirects are not followed: a signed message goes only to the URL the
//! operator configured, never where a compromised or misconfigured
//! endpoint points it. What the endpoint answers is read sparingly (a
//! short, printable excerpt of at most 4 KiB of body) because it ends up
//! in logs and the console, and an endpoint may answer megabytes.
//! Nothing this module returns names the URL, which may carry a password.

use std::time::Duration;

use reqwest::Url;
use reqwest::header::CONTENT_TYPE;

use super::signing::SigningKey;

/// Longest an attempt may take, from connecting to the end of the answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// Longest connecting may take: a host that does not answer is down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes of a refusal's body read at most.
const EXCERPT_BYTES: usize = 4096;

/// Characters of a refusal's body kept at most.
const EXCERPT_CHARS: usize = 200;

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The endpoint answered 2xx: the message is delivered.
    Delivered { status: u16 },
    /// The endpoint answered another status (a 3xx included: redirects are
    /// not followed), with the start of its body, printable.
    Refused { status: u16, excerpt: String },
    /// No answer: a timeout, a refused connection, a TLS or network
    /// error. `reason` is a short phrase that never names the URL.
    Unreachable { reason: String },
}

/// Makes attempts; one per service, as it holds the connection pool.
#[derive(Debug, Clone)]
pub struct Sender {
    client: reqwest::Client,
}

impl Sender {
    /// A sender whose attempts end after `timeout` ([`DEFAULT_TIMEOUT`] in
    /// service; tests shorten it).
    pub fn new(timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .user_agent(concat!("cobalt-receiver/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client })
    }

    /// Posts `body` to `url`, signed for `webhook_id` at `now_unix` (the
    /// attempt's own time, in Unix seconds: each retry is signed afresh).
    pub async fn send(
        &self,
        url: &Url,
        key: &SigningKey,
        webhook_id: &str,
        body: &[u8],
        now_unix: i64,
    ) -> Attempt {
        let response = self
            .client
            .post(url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header("webhook-id", webhook_id)
            .header("webhook-timestamp", now_unix.to_string())
            .header(
                "webhook-signature",
                key.signature(webhook_id, now_unix, body),
            )
            .body(body.to_vec())
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(error) => {
                return Attempt::Unreachable {
                    reason: unreachable_reason(&error).into(),
                };
            }
        };
        let status = response.status().as_u16();
        if response.status().is_success() {
            return Attempt::Delivered { status };
        }
        Attempt::Refused {
            status,
            excerpt: excerpt(response).await,
        }
    }
}

/// The start of a refusal's body: at most [`EXCERPT_BYTES`] read, then at
/// most [`EXCERPT_CHARS`] characters kept, each control or line-breaking
/// character a space, so an excerpt stays on one log line.
async fn excerpt(mut response: reqwest::Response) -> String {
    let mut head = Vec::with_capacity(EXCERPT_BYTES);
    while head.len() < EXCERPT_BYTES {
        // A body cut short by an error or the timeout still has a start.
        let Ok(Some(chunk)) = response.chunk().await else {
            break;
        };
        let room = EXCERPT_BYTES - head.len();
        head.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    // Dropping the response here closes the connection: the rest is never read.
    printable(&head)
}

fn printable(bytes: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| {
            if c.is_control() || c.is_whitespace() {
                ' '
            } else {
                c
            }
        })
        .collect();
    let text: String = text.trim_start().chars().take(EXCERPT_CHARS).collect();
    text.trim_end().to_owned()
}

/// Why no answer came, in words that never name the URL (reqwest's own
/// messages do, and a URL may carry a password or a token).
fn unreachable_reason(error: &reqwest::Error) -> &'static str {
    if error.is_timeout() {
        return "timed out";
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if cause.is::<tokio_rustls::rustls::Error>() {
            return "TLS handshake failed";
        }
        // hyper-util names a failed lookup this way, and nothing else.
        if cause.to_string().starts_with("dns error") {
            return "DNS lookup failed";
        }
        source = cause.source();
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind;
            match io.kind() {
                ErrorKind::ConnectionRefused => return "connection refused",
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => {
                    return "connection reset";
                }
                ErrorKind::TimedOut => return "timed out",
                _ => {}
            }
            // An io::Error's source() skips the error it wraps, which is
            // where rustls' errors sit (inside another io::Error).
            if let Some(inner) = io.get_ref() {
                source = Some(inner);
            }
        }
    }
    if error.is_connect() {
        "connection error"
    } else if error.is_builder() {
        "invalid request"
    } else {
        "no HTTP answer"
    }
}

/// `excerpt` with every occurrence of `value` (an MRN the message carried,
/// echoed back by the endpoint) replaced by `[redacted]`, and so is a
/// trailing piece of it where the excerpt was cut mid-value. An empty
/// `value` redacts nothing.
pub fn redact(excerpt: &str, value: &str) -> String {
    if value.is_empty() {
        return excerpt.to_owned();
    }
    let mut redacted = excerpt.replace(value, "[redacted]");
    let cut = (1..value.len())
        .rev()
        .filter(|&n| value.is_char_boundary(n))
        .find(|&n| redacted.ends_with(&value[..n]));
    if let Some(n) = cut {
        redacted.truncate(redacted.len() - n);
        redacted.push_str("[redacted]");
    }
    redacted
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use axum::Router;
    use axum::body::{Body, Bytes};
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::routing::{any, post};
    use base64::Engine;

    use super::*;

    fn secret() -> String {
        format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode([42u8; 32])
        )
    }

    fn key() -> SigningKey {
        SigningKey::parse(&secret()).unwrap()
    }

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    /// Serves `router` on a port of its own; its address.
    async fn serve(router: Router) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        address
    }

    fn url(address: SocketAddr, path: &str) -> Url {
        Url::parse(&format!("http://{address}{path}")).unwrap()
    }

    #[tokio::test]
    async fn a_2xx_is_delivered_with_headers_the_standard_webhooks_library_verifies() {
        let received: Arc<Mutex<Option<(HeaderMap, Bytes)>>> = Arc::default();
        let seen = received.clone();
        let address = serve(Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: Bytes| async move {
                *seen.lock().unwrap() = Some((headers, body));
                StatusCode::NO_CONTENT
            }),
        ))
        .await;
        let body = br#"{"type":"job.created","data":{"job_id":"j_1"}}"#;

        let attempt = Sender::new(DEFAULT_TIMEOUT)
            .unwrap()
            .send(&url(address, "/hook"), &key(), "msg_1", body, now())
            .await;

        assert_eq!(attempt, Attempt::Delivered { status: 204 });
        let (headers, received) = received.lock().unwrap().take().unwrap();
        assert_eq!(&received[..], body);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(headers["webhook-id"], "msg_1");
        assert!(
            headers[header::USER_AGENT]
                .to_str()
                .unwrap()
                .starts_with("cobalt-receiver/")
        );
        standardwebhooks::Webhook::new(&secret())
            .unwrap()
            .verify(&received, &headers)
            .expect("the reference library accepts our signature");
    }

    #[tokio::test]
    async fn a_500_is_refused_with_a_short_printable_excerpt_of_a_huge_body() {
        let address = serve(Router::new().route(
            "/hook",
            post(|| async {
                let mut body = b"\x1b[31m\r\n  error:\tdatabase\x00 down\x07 ".to_vec();
                body.resize(1024 * 1024, b'\n');
                (StatusCode::INTERNAL_SERVER_ERROR, body)
            }),
        ))
        .await;

        let attempt = Sender::new(DEFAULT_TIMEOUT)
            .unwrap()
            .send(&url(address, "/hook"), &key(), "msg_1", b"{}", now())
            .await;

        let Attempt::Refused { status, excerpt } = attempt else {
            panic!("{attempt:?}");
        };
        assert_eq!(status, 500);
        assert_eq!(excerpt, "[31m    error: database  down");
        assert!(excerpt.chars().count() <= 200);
        assert!(!excerpt.chars().any(char::is_control), "{excerpt:?}");
    }

    #[tokio::test]
    async fn an_endless_body_is_read_only_as_far_as_the_excerpt_needs() {
        let address = serve(Router::new().route(
            "/hook",
            post(|| async {
                let chunk = Bytes::from(vec![b'x'; 16 * 1024]);
                let endless =
                    futures_util::stream::repeat(Ok::<_, std::convert::Infallible>(chunk));
                (StatusCode::SERVICE_UNAVAILABLE, Body::from_stream(endless))
            }),
        ))
        .await;
        let started = Instant::now();

        let attempt = Sender::new(Duration::from_secs(10))
            .unwrap()
            .send(&url(address, "/hook"), &key(), "msg_1", b"{}", now())
            .await;

        assert_eq!(
            attempt,
            Attempt::Refused {
                status: 503,
                excerpt: "x".repeat(200)
            }
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "read to the end?"
        );
    }

    #[tokio::test]
    async fn a_redirect_is_refused_and_not_followed() {
        let followed = Arc::new(AtomicUsize::new(0));
        let count = followed.clone();
        let target = serve(Router::new().fallback(any(move || async move {
            count.fetch_add(1, Ordering::SeqCst);
            StatusCode::OK
        })))
        .await;
        for status in [StatusCode::FOUND, StatusCode::TEMPORARY_REDIRECT] {
            let location = format!("http://{target}/elsewhere");
            let address = serve(Router::new().route(
                "/hook",
                post(move || async move { (status, [(header::LOCATION, location)], "moved") }),
            ))
            .await;

            let attempt = Sender::new(DEFAULT_TIMEOUT)
                .unwrap()
                .send(&url(address, "/hook"), &key(), "msg_1", b"{}", now())
                .await;

            assert_eq!(
                attempt,
                Attempt::Refused {
                    status: status.as_u16(),
                    excerpt: "moved".into()
                }
            );
        }
        assert_eq!(
            followed.load(Ordering::SeqCst),
            0,
            "the target saw a request"
        );
    }

    #[tokio::test]
    async fn an_endpoint_that_never_answers_is_unreachable_at_the_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let started = Instant::now();

        let attempt = Sender::new(Duration::from_millis(300))
            .unwrap()
            .send(&url(address, "/hook"), &key(), "msg_1", b"{}", now())
            .await;

        assert_eq!(
            attempt,
            Attempt::Unreachable {
                reason: "timed out".into()
            }
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_for_a_reason_that_names_no_url() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let url = Url::parse(&format!("http://user:pa55word@{address}/hook?token=t0k3n")).unwrap();

        let attempt = Sender::new(DEFAULT_TIMEOUT)
            .unwrap()
            .send(&url, &key(), "msg_1", b"{}", now())
            .await;

        let Attempt::Unreachable { reason } = attempt else {
            panic!("{attempt:?}");
        };
        assert_eq!(reason, "connection refused");
        for leak in [
            "127.0.0.1",
            &address.port().to_string(),
            "pa55word",
            "t0k3n",
            "http",
        ] {
            assert!(!reason.contains(leak), "{reason}");
        }
    }

    #[tokio::test]
    async fn https_to_a_plain_http_server_is_a_failed_tls_handshake() {
        let address = serve(Router::new().route("/hook", post(|| async { "ok" }))).await;
        let url = Url::parse(&format!("https://{address}/hook")).unwrap();

        let attempt = Sender::new(DEFAULT_TIMEOUT)
            .unwrap()
            .send(&url, &key(), "msg_1", b"{}", now())
            .await;

        assert_eq!(
            attempt,
            Attempt::Unreachable {
                reason: "TLS handshake failed".into()
            }
        );
    }

    #[test]
    fn redaction_replaces_every_occurrence_and_a_cut_one() {
        assert_eq!(
            redact("MRN 00123 unknown; 00123 rejected", "00123"),
            "MRN [redacted] unknown; [redacted] rejected"
        );
        assert_eq!(redact("no match here", "00123"), "no match here");
        assert_eq!(
            redact("unknown patient 001", "00123"),
            "unknown patient [redacted]"
        );
        assert_eq!(redact("anything", ""), "anything");
        assert_eq!(redact("", "00123"), "");
        assert_eq!(redact("é", "éa"), "[redacted]");
    }

    #[test]
    fn excerpts_are_one_printable_line() {
        assert_eq!(printable(b"\n\n  ok \r\n"), "ok");
        assert_eq!(printable("a\u{2028}b\u{85}c".as_bytes()), "a b c");
        assert_eq!(printable(&[0xff, b'a']), "\u{fffd}a");
        assert_eq!(printable(&[b'y'; 500]).len(), 200);
    }
}
