//! Signing in with an API token, and out.

use axum::extract::{Extension, Form, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;

use super::html::{Nav, document, error_page};
use super::session::{expired_cookie, session_cookie};
use super::{ConsoleState, CsrfChecked, RequestId, Session};

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
            "Any API token of this service signs in; pages need the read permission, "
            "the audit trail and recovery need operate. The session ends after a while "
            "without use, or when you sign out."
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
    request_id: RequestId,
    form: Result<Form<SignIn>, axum::extract::rejection::FormRejection>,
) -> Response {
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
        tracing::warn!(
            "console: a sign-in with an unknown token (or one that may not read) was refused"
        );
        // Failed sign-ins are security events too; the token is not kept.
        state.app.audit.record(crate::audit::Action {
            actor: "(unknown token)",
            action: "console.sign_in_refused",
            target: String::new(),
            request_id: request_id.0.as_deref(),
        });
        return form_page(
            StatusCode::UNAUTHORIZED,
            &next,
            Some("That token is not one of this service's API tokens with the read permission."),
        );
    };
    let session = state.sessions.start(caller);
    state.audit(&session, &request_id, "console.sign_in", String::new());
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
    state.sessions.end(&session.id);
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
