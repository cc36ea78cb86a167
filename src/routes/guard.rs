//! Who may call which route of the API. Each route states its permission
//! where it is routed ([`ApiRoutes::get`] and the like take one), and the
//! guard in front of them refuses a request to a route that stated none:
//! a route is closed until someone says who may call it.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::handler::Handler;
use axum::http::{Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, on};

use crate::auth::{ApiTokens, Permission};
use crate::error::AppError;

/// One route's rule: who may call it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub method: &'static str,
    pub path: &'static str,
    pub permission: Permission,
}

/// Routes of the API, each with its permission.
pub struct ApiRoutes<S> {
    router: Router<S>,
    rules: Vec<Rule>,
}

impl<S: Clone + Send + Sync + 'static> ApiRoutes<S> {
    pub fn new() -> Self {
        Self {
            router: Router::new(),
            rules: Vec::new(),
        }
    }

    pub fn get<H: Handler<T, S>, T: 'static>(
        self,
        path: &'static str,
        permission: Permission,
        handler: H,
    ) -> Self {
        self.on("GET", MethodFilter::GET, path, permission, handler)
    }

    pub fn put<H: Handler<T, S>, T: 'static>(
        self,
        path: &'static str,
        permission: Permission,
        handler: H,
    ) -> Self {
        self.on("PUT", MethodFilter::PUT, path, permission, handler)
    }

    pub fn post<H: Handler<T, S>, T: 'static>(
        self,
        path: &'static str,
        permission: Permission,
        handler: H,
    ) -> Self {
        self.on("POST", MethodFilter::POST, path, permission, handler)
    }

    fn on<H: Handler<T, S>, T: 'static>(
        mut self,
        method: &'static str,
        filter: MethodFilter,
        path: &'static str,
        permission: Permission,
        handler: H,
    ) -> Self {
        self.router = self.router.route(path, on(filter, handler));
        self.rules.push(Rule {
            method,
            path,
            permission,
        });
        self
    }

    pub fn merge(mut self, other: Self) -> Self {
        self.router = self.router.merge(other.router);
        self.rules.extend(other.rules);
        self
    }

    /// Every route's rule.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The routes behind the guard: a bearer token (401 without one), and
    /// the permission its route states (403 without it, or when the route
    /// stated none). `inner` runs once the caller is known.
    pub fn guarded(
        self,
        tokens: Arc<ApiTokens>,
        inner: impl FnOnce(Router<S>) -> Router<S>,
    ) -> Router<S> {
        let guard = Guard {
            tokens,
            rules: Arc::new(
                self.rules
                    .iter()
                    .map(|rule| ((rule.method, rule.path), rule.permission))
                    .collect(),
            ),
        };
        inner(self.router).route_layer(middleware::from_fn_with_state(guard, authorize))
    }
}

impl<S: Clone + Send + Sync + 'static> Default for ApiRoutes<S> {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Clone)]
struct Guard {
    tokens: Arc<ApiTokens>,
    rules: Arc<HashMap<(&'static str, &'static str), Permission>>,
}

/// Checks the bearer token (401) and the permission the route states
/// (403), and names the caller in the request's log lines.
async fn authorize(State(guard): State<Guard>, mut request: Request, next: Next) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    let Some(caller) = guard.tokens.caller(authorization) else {
        return AppError::Unauthorized(
            "a valid `Authorization: Bearer <token>` header is required",
        )
        .into_response();
    };
    tracing::Span::current().record("token", &*caller.name);
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("", MatchedPath::as_str);
    // HEAD is answered by the GET route.
    let method = match request.method() {
        &Method::HEAD => "GET",
        method => method.as_str(),
    };
    let Some(&needed) = guard.rules.get(&(method, route)) else {
        tracing::error!(
            method,
            route,
            "a route of the API states no permission; it is refused to every caller"
        );
        return AppError::Forbidden("this route is closed: it states no permission".into())
            .into_response();
    };
    if !caller.may(needed) {
        return AppError::Forbidden(format!(
            "the token `{}` lacks the `{}` permission this route needs",
            caller.name,
            needed.as_str()
        ))
        .into_response();
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use axum::body::Body;
    use axum::http::StatusCode;
    use tower::ServiceExt;

    async fn status(
        router: &Router,
        method: Method,
        path: &str,
        token: Option<&str>,
    ) -> StatusCode {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        router
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
            .status()
    }

    #[tokio::test]
    async fn a_route_that_states_no_permission_is_refused_to_everyone() {
        let tokens = Arc::new(ApiTokens::new(&[
            Secret::new("all:read+submit+operate+phi:tok_all"),
            Secret::new("reader:read:tok_read"),
        ]));
        let routes = ApiRoutes::<()>::new()
            .get("/v1/open-to-readers", Permission::Read, || async { "ok" })
            .post("/v1/open-to-readers", Permission::Operate, || async {
                "ok"
            });
        // Added beside the rules, as a careless change would.
        let router = routes.guarded(tokens, |router| {
            router.route("/v1/forgotten", axum::routing::post(|| async { "oops" }))
        });
        for token in [Some("tok_all"), Some("tok_read")] {
            assert_eq!(
                status(&router, Method::POST, "/v1/forgotten", token).await,
                StatusCode::FORBIDDEN,
                "{token:?}"
            );
        }
        assert_eq!(
            status(&router, Method::POST, "/v1/forgotten", None).await,
            StatusCode::UNAUTHORIZED
        );
        let read = |token| status(&router, Method::GET, "/v1/open-to-readers", token);
        assert_eq!(read(Some("tok_read")).await, StatusCode::OK);
        assert_eq!(
            status(
                &router,
                Method::HEAD,
                "/v1/open-to-readers",
                Some("tok_read")
            )
            .await,
            StatusCode::OK
        );
        assert_eq!(
            status(
                &router,
                Method::POST,
                "/v1/open-to-readers",
                Some("tok_read")
            )
            .await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            status(
                &router,
                Method::POST,
                "/v1/open-to-readers",
                Some("tok_all")
            )
            .await,
            StatusCode::OK
        );
    }
}
