//! Signing in with an API token, and out. Refused sign-ins are counted
//! by client address and throttled ([`super::throttle`]).

use axum::extract::{Extension, Form, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;

use super::client::ClientAddress;
use super::html::{Nav, document, error_page};
use super::session::{expired_cookie, session_cookie};
use super::throttle::{Noteworthy, Verdict};
use super::{ConsoleState, CsrfChecked, RequestId, Session};

/// The audit trail's actor and action of a refused sign-in.
pub const UNKNOWN_ACTOR: &str = "(unknown token)";
pub const REFUSED_ACTION: &str = "console.sign_in_refused";

#[derive(Deserialize)]
pub struct Next {
    next: Option<String>,
}

/// Where to go after signing in: a console page, nothing else (no open
/// redirect).
fn destination(next: Option<&str>) -> &str {
    match next {
        Some(path)
            if path.starts_with("/ui")
                && !path.contains("//")
                && !path.contains('\\')
                && !path.starts_with("/ui/sign-") =>
        {
            path
        }
        _ => "/ui",
    }
}

pub async fn form(Query(next): Query<Next>) -> Response {
    form_page(StatusCode::OK, destination(next.next.as_deref()), None)
}

fn form_page(status: StatusCode, next: &str, problem: Option<&str>) -> Response {
    let body = html! {
        h1 { "Sign in" }
        @if let Some(problem) = problem {
            p.panel role="alert" { (problem) }
        }
        form method="post" action="/ui/sign-in" {
            input type="hidden" name="next" value=(next);
            p {
                label for="token" { "API token" }
                br;
                input #token type="password" name="token" autocomplete="current-password" required size="40";
            }
            p { button type="submit" { "Sign in" } }
        }
        p.note {
            "Any API token of this service with the read permission signs in; the audit "
            "trail and recovery need operate, a whole MRN needs phi. The session ends "
            "after a while without use, after some hours in any case, when you sign out, "
            "or when the same token signs in elsewhere."
        }
    };
    (status, document("Sign in", Nav::None, None, body)).into_response()
}

#[derive(Deserialize)]
pub struct SignIn {
    token: String,
    next: Option<String>,
}

pub async fn sign_in(
    State(state): State<ConsoleState>,
    client: ClientAddress,
    request_id: RequestId,
    form: Result<Form<SignIn>, axum::extract::rejection::FormRejection>,
) -> Response {
    let now = std::time::Instant::now();
    // A throttled client is answered before its token is looked at, so the
    // answer is the same whether the token is right.
    if let Verdict::Wait(wait) = state.refusals.check(client.0, now) {
        let seconds = wait.as_secs().max(1);
        let mut page = error_page(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many refused sign-ins from your address. Wait a few minutes, then try again.",
        );
        page.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        return page;
    }
    let Ok(Form(form)) = form else {
        return error_page(StatusCode::BAD_REQUEST, "The sign-in form was incomplete.");
    };
    let next = destination(form.next.as_deref()).to_owned();
    let caller = state
        .app
        .api_tokens
        .caller_of(form.token.trim())
        .filter(|caller| caller.may(crate::auth::Permission::Read));
    let Some(caller) = caller else {
        // Counted, not written one by one: a stranger's guesses must not
        // grow the database. The token is never kept.
        let (counted_as, noteworthy) = state.refusals.refused(client.0, now);
        match noteworthy {
            Noteworthy::First => {
                tracing::warn!(
                    client = %counted_as,
                    "console: a sign-in with an unknown token (or one that may not read) was refused"
                );
                state.app.audit.record(crate::audit::Action {
                    actor: UNKNOWN_ACTOR,
                    action: REFUSED_ACTION,
                    target: format!("from {counted_as}"),
                    request_id: request_id.0.as_deref(),
                });
            }
            Noteworthy::Throttling => tracing::warn!(
                client = %counted_as,
                "console: too many refused sign-ins; this client is throttled"
            ),
            Noteworthy::Quiet => {}
        }
        return form_page(
            StatusCode::UNAUTHORIZED,
            &next,
            Some("That token is not one of this service's API tokens with the read permission."),
        );
    };
    let session = match state.sessions.start(caller).await {
        Ok(session) => session,
        Err(error) => return super::html::unavailable(&error),
    };
    state.audit(
        &session,
        &request_id,
        "console.sign_in",
        format!("from {client}"),
    );
    (
        StatusCode::SEE_OTHER,
        session_cookie(&session, state.https),
        [(header::LOCATION, next)],
    )
        .into_response()
}

pub async fn sign_out(
    State(state): State<ConsoleState>,
    Extension(session): Extension<Session>,
    request_id: RequestId,
    _: CsrfChecked,
) -> Response {
    if let Err(error) = state.sessions.end(&session.id).await {
        return super::html::unavailable(&error);
    }
    state.audit(&session, &request_id, "console.sign_out", String::new());
    (
        StatusCode::SEE_OTHER,
        expired_cookie(state.https),
        [(header::LOCATION, "/ui/sign-in")],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::destination;

    #[test]
    fn only_console_pages_are_destinations() {
        assert_eq!(
            destination(Some("/ui/jobs?status=failed")),
            "/ui/jobs?status=failed"
        );
        for elsewhere in [
            "https://evil.example",
            "//evil.example",
            "/ui//evil",
            "/metrics",
            "/ui/sign-out",
            "/ui\\x",
        ] {
            assert_eq!(destination(Some(elsewhere)), "/ui", "{elsewhere}");
        }
        assert_eq!(destination(None), "/ui");
    }
}
