//! The operator console: server-rendered pages on a listener of their own
//! (`console_listen`), never on the webhook port.
//!
//! - Pages are HTML with one stylesheet, no script: every filter is a GET
//!   form, so the state is in the URL (shareable, opens in a new tab).
//! - Sign-in turns an API token into a session kept in the database
//!   ([`session`]), so any replica serves it; refused sign-ins are
//!   throttled by client address ([`throttle`], [`client`]). Every POST
//!   checks the request's origin and the session's CSRF token.
//! - No note text, subject or payload is ever shown. MRNs are masked to
//!   their last four characters; revealing one needs the `phi` permission
//!   and is refused unless its audit row is committed. Every page view,
//!   search, export and recovery writes an audit row.
//! - Values that came from outside are shown as [`display`] says: cut to
//!   fit, invisible characters made visible, CSV cells defused.

mod chart;
mod client;
mod display;
mod emr_times;
mod hours;
mod html;
mod job;
mod jobs;
mod outbound;
mod recovery;
mod search;
mod session;
mod sign_in;
mod throttle;
mod today;
mod trail;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use jiff::tz::TimeZone;
use tower::ServiceBuilder;
use tower_http::trace::TraceLayer;

use crate::audit::Action;
use crate::request_id;
use crate::state::AppState;
pub use client::TrustedProxies;
pub use session::{Session, Sessions};
use throttle::SignInRefusals;

/// How often refused sign-ins are written to the audit trail, one row
/// per client address.
const REFUSALS_REPORTED_EVERY: Duration = Duration::from_secs(60);

/// The console's settings, from the configuration.
pub struct Settings {
    pub zone: TimeZone,
    /// The listener speaks HTTPS: cookies are `Secure`.
    pub https: bool,
    pub session_idle: Duration,
    pub session_lifetime: Duration,
    pub sign_in_attempts: u32,
    pub sign_in_window: Duration,
    pub trusted_proxies: TrustedProxies,
    /// This process's name on the recovery sweep's lease.
    pub lease_holder: String,
    /// When the next scheduled sweep is due after one started here.
    pub sweep_interval: Duration,
}

/// What the console's handlers share.
#[derive(Clone)]
pub struct ConsoleState {
    pub app: AppState,
    pub sessions: Arc<Sessions>,
    pub zone: TimeZone,
    pub https: bool,
    refusals: Arc<SignInRefusals>,
    trusted_proxies: Arc<TrustedProxies>,
    lease_holder: Arc<str>,
    sweep_interval: Duration,
}

impl ConsoleState {
    /// The state; [`ConsoleState::report_refusals_every_minute`] is its
    /// background task.
    pub fn new(app: AppState, settings: Settings) -> Self {
        let sessions = Sessions::new(
            app.store.clone(),
            app.api_tokens.clone(),
            settings.session_idle,
            settings.session_lifetime,
        );
        Self {
            sessions: Arc::new(sessions),
            zone: settings.zone,
            https: settings.https,
            refusals: Arc::new(SignInRefusals::new(
                settings.sign_in_attempts,
                settings.sign_in_window,
            )),
            trusted_proxies: Arc::new(settings.trusted_proxies),
            lease_holder: settings.lease_holder.into(),
            sweep_interval: settings.sweep_interval,
            app,
        }
    }

    /// Writes refused sign-ins to the audit trail every minute, until
    /// shutdown stops it (a background task).
    pub async fn report_refusals_every_minute(self) {
        let mut every = tokio::time::interval(REFUSALS_REPORTED_EVERY);
        every.tick().await;
        loop {
            every.tick().await;
            self.report_refusals();
        }
    }

    /// Writes the refused sign-ins counted since the last report: one
    /// audit row per client address.
    fn report_refusals(&self) {
        for report in self.refusals.report(std::time::Instant::now()) {
            tracing::warn!(
                client = %report.client,
                refused = report.refused,
                throttled = report.throttled,
                "console: sign-ins were refused"
            );
            self.app.audit.record(Action {
                actor: sign_in::UNKNOWN_ACTOR,
                action: sign_in::REFUSED_ACTION,
                target: format!(
                    "from {}: {} more refused ({} while throttled)",
                    report.client, report.refused, report.throttled
                ),
                request_id: None,
            });
        }
    }

    /// Queues an audit row for what `session` did in this request.
    fn audit(
        &self,
        session: &Session,
        request_id: &RequestId,
        action: &'static str,
        target: String,
    ) {
        self.app.audit.record(Action {
            actor: &session.caller.name,
            action,
            target: crate::audit::bounded(&target),
            request_id: request_id.0.as_deref(),
        });
    }
}

/// The request's id, for audit rows.
pub struct RequestId(Option<String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .headers
                .get(&request_id::HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        ))
    }
}

/// A form POST whose `csrf` field is the session's token, with the form's
/// other fields (`T`, none by default); anything else is refused with 403.
/// It reads the body, so it comes last.
pub struct CsrfChecked<T = NoFields>(pub T);

/// A form with nothing but its CSRF token.
#[derive(serde::Deserialize)]
pub struct NoFields {}

#[derive(serde::Deserialize)]
struct CsrfForm<T> {
    csrf: String,
    #[serde(flatten)]
    fields: T,
}

impl<S, T> axum::extract::FromRequest<S> for CsrfChecked<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned + Send,
{
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let session = request.extensions().get::<Session>().cloned();
        let form = axum::Form::<CsrfForm<T>>::from_request(request, state).await;
        match (session, form) {
            (Some(session), Ok(axum::Form(form))) if session.checks(&form.csrf) => {
                Ok(Self(form.fields))
            }
            _ => Err(html::error_page(
                StatusCode::FORBIDDEN,
                "This form has expired; reload the page.",
            )),
        }
    }
}

/// The console's routes. Everything but the sign-in page and the
/// stylesheet needs a session.
pub fn router(state: ConsoleState) -> Router {
    let signed_in = Router::new()
        .route("/ui", get(today::page))
        .route("/ui/jobs", get(jobs::page))
        .route("/ui/jobs.csv", get(jobs::export))
        .route("/ui/jobs/{job_id}", get(job::page))
        .route(
            "/ui/jobs/{job_id}/reveal-mrn",
            axum::routing::post(job::reveal_mrn),
        )
        .route("/ui/search", get(search::page))
        .route("/ui/overdue", get(recovery::overdue))
        .route("/ui/recoveries", axum::routing::post(recovery::start))
        .route("/ui/recoveries/{id}", get(recovery::progress))
        .route("/ui/outbound", get(outbound::page))
        .route(
            "/ui/outbound/{endpoint}/resend",
            axum::routing::post(outbound::resend),
        )
        .route("/ui/audit", get(trail::page))
        .route("/ui/sign-out", axum::routing::post(sign_in::sign_out))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_session,
        ));
    Router::new()
        .merge(signed_in)
        .route("/ui/sign-in", get(sign_in::form).post(sign_in::sign_in))
        .route("/ui/style.css", get(html::stylesheet))
        .route("/ui/icon.svg", get(html::icon))
        .route("/", get(|| async { Redirect::to("/ui") }))
        .fallback(not_found)
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                .map_request(request_id::drop_unusable)
                .layer(request_id::set())
                .layer(TraceLayer::new_for_http().make_span_with(request_span))
                .layer(request_id::propagate())
                .layer(middleware::from_fn(same_origin_posts))
                .layer(middleware::from_fn(security_headers)),
        )
}

/// A span per request, with the path but never the query (filters could
/// one day hold something a log should not).
fn request_span(request: &Request) -> tracing::Span {
    tracing::info_span!(
        "console",
        method = %request.method(),
        path = request.uri().path(),
        request_id = request
            .headers()
            .get(&request_id::HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
        token = tracing::field::Empty,
    )
}

/// No script, no third party, no framing; nothing cached, no referrer.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (
            HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    // Pages hold ids that lead to patient data: never kept. The stylesheet
    // (no data) may be.
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// A state-changing request from another site is refused. Browsers say
/// where a request comes from in `Sec-Fetch-Site` (which a page cannot
/// forge), and in `Origin`, except that with `Referrer-Policy:
/// no-referrer` a form's `Origin` is `null`. So: a `Sec-Fetch-Site` other
/// than `same-origin` is refused, an `Origin` must be this console's, and a
/// request with neither is refused. The CSRF token is checked by each
/// form's handler.
async fn same_origin_posts(request: Request, next: Next) -> Response {
    if request.method() != Method::GET
        && request.method() != Method::HEAD
        && !from_this_origin(request.headers())
    {
        return html::error_page(
            StatusCode::FORBIDDEN,
            "This form was sent from another site, so it was refused.",
        );
    }
    next.run(request).await
}

fn from_this_origin(headers: &HeaderMap) -> bool {
    let text = |name: HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let site = text(HeaderName::from_static("sec-fetch-site"));
    let origin = text(header::ORIGIN).filter(|origin| *origin != "null");
    match (site, origin) {
        (Some(site), _) if site != "same-origin" => false,
        (_, Some(origin)) => {
            let origin = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            origin.is_some() && origin == text(header::HOST)
        }
        (Some(_), None) => true,
        (None, None) => false,
    }
}

/// Finds the session the cookie names; without a live one, sends the
/// browser to sign in (and back here after).
async fn require_session(
    State(state): State<ConsoleState>,
    mut request: Request,
    next: Next,
) -> Response {
    let session = match session::cookie(request.headers()) {
        Some(id) => match state.sessions.get(id).await {
            Ok(session) => session,
            // The database cannot say: the session may well be live, so
            // its cookie is kept.
            Err(error) => return html::unavailable(&error),
        },
        None => None,
    };
    match session {
        Some(session) => {
            tracing::Span::current().record("token", &*session.caller.name);
            request.extensions_mut().insert(session);
            next.run(request).await
        }
        None => {
            let back = match request.method() {
                &Method::GET => request
                    .uri()
                    .path_and_query()
                    .map_or("/ui", |p| p.as_str())
                    .to_owned(),
                _ => "/ui".to_owned(),
            };
            let to = format!("/ui/sign-in?next={}", html::encode_query(&back));
            (
                StatusCode::SEE_OTHER,
                [(header::LOCATION, to)],
                session::expired_cookie(state.https),
            )
                .into_response()
        }
    }
}

async fn not_found() -> Response {
    html::error_page(StatusCode::NOT_FOUND, "There is no such page.")
}
