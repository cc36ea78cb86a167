//! A real server per test: the application's own startup path, a random
//! loopback port, a database of its own on the engine under test.
//!
//! This file holds the server side: [`TestApp`], its configuration and the
//! test credentials. The rest, re-exported here except `console`:
//!
//! - `events`: Cobalt-like webhook bodies, patient data, signatures;
//! - `root`: what needs root (immutable files);
//! - `console`: a browser of the operator console and the data its tests
//!   deliver (`use crate::helpers::console::*`).

pub mod console;
mod events;
mod root;

use std::sync::Arc;
use std::time::Duration;

use cobalt_receiver::config::Config;
use cobalt_receiver::secret::Secret;
use cobalt_receiver::startup::Application;

use reqwest::{Response, StatusCode};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use crate::database::*;
pub use events::*;
pub use root::*;

/// The secret of `fixtures/signature-vectors.json`; for tests only.
pub const SECRET: &str = "whsec_test_7f3a9c2e5b8d4f1a";
/// A second active secret, as during a rotation; for tests only.
pub const ROTATED_SECRET: &str = "whsec_test_rotation_second";
/// A status API token (bare: read only); for tests only.
pub const TOKEN: &str = "test-token-not-a-secret";
/// The token named `clinic-app`, which may read and submit; for tests only.
pub const SUBMIT_TOKEN: &str = "test-submit-token-not-a-secret";
/// The token named `ops`, which may read, submit and operate; for tests only.
pub const OPS_TOKEN: &str = "test-ops-token-not-a-secret";
/// The token named `records`, which may read and see whole MRNs; for tests only.
pub const PHI_TOKEN: &str = "test-phi-token-not-a-secret";

/// How often the server notes overdue jobs as changes.
pub const OVERDUE_CHECK: Duration = cobalt_receiver::feed::OVERDUE_CHECK_EVERY;

/// A key for `encryption_keys` (32 bytes in base64); for tests only.
pub const ENCRYPTION_KEY: &str = "k1:dGVzdC1rZXktb25lLW5vdC1hLXNlY3JldC0wMDAwMDE=";

/// Seals patient data under `keys` (lines of `encryption_keys`).
pub fn seal_with(config: &mut Config, keys: &[&str]) {
    config.encryption_keys = keys.iter().map(|key| Secret::new(*key)).collect();
    config.keyring = cobalt_receiver::sealing::Keyring::parse(&config.encryption_keys)
        .expect("test keys are well formed");
}

/// The secret of the test's outgoing webhook endpoint (24 bytes); for
/// tests only.
pub const OUTBOUND_SECRET: &str = "whsec_dGVzdC1vdXRib3VuZC1zZWNyZXQtMDAwMDAwMDAw";

/// Every type of outgoing webhook.
pub const ALL_WEBHOOK_TYPES: &[&str] =
    &["job.registered", "job.created", "job.failed", "job.overdue"];

/// Pushes changes to `endpoints` (name, URL, webhook types, whether it
/// takes the MRN), signed with [`OUTBOUND_SECRET`] and retried after each
/// of `retry_delays_secs`, read by the configuration's own rules.
pub fn send_outbound(
    config: &mut Config,
    endpoints: &[(&str, &str, &[&str], bool)],
    retry_delays_secs: &[u64],
) {
    config.outbound_webhooks = endpoints
        .iter()
        .map(
            |(name, url, types, phi)| cobalt_receiver::config::OutboundWebhook {
                name: (*name).to_owned(),
                url: (*url).to_owned(),
                secret: Secret::new(OUTBOUND_SECRET),
                types: types.iter().map(|t| (*t).to_owned()).collect(),
                phi: *phi,
            },
        )
        .collect();
    config.outbound_retry_delays_secs = retry_delays_secs.to_vec();
    config
        .read_outbound_webhooks()
        .expect("the test endpoints follow the rules");
}

/// Pushes every change to one endpoint, `clinic-app` at `url`, retried
/// after each of `retry_delays_secs`.
pub fn send_outbound_to(config: &mut Config, url: &str, retry_delays_secs: &[u64]) {
    send_outbound(
        config,
        &[("clinic-app", url, ALL_WEBHOOK_TYPES, false)],
        retry_delays_secs,
    );
}

pub struct TestApp {
    pub address: String,
    /// `http://host:port` of the console, when `console_listen` was set.
    pub console: Option<String>,
    pub client: reqwest::Client,
    pub dir: Arc<Workspace>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

pub fn test_config(dir: &Workspace) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: dir.database_url().to_owned(),
        webhook_secrets: vec![Secret::new(SECRET), Secret::new(ROTATED_SECRET)],
        api_tokens: vec![
            Secret::new(TOKEN),
            Secret::new(format!("clinic-app:read+submit:{SUBMIT_TOKEN}")),
            Secret::new(format!("ops:read+submit+operate:{OPS_TOKEN}")),
            Secret::new(format!("records:read+phi:{PHI_TOKEN}")),
        ],
        ..Config::default()
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(customize: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_in(Arc::new(workspace()), customize).await
}

/// Starts a server on the database of `dir` (a restart when one ran there).
pub async fn spawn_app_in(dir: Arc<Workspace>, customize: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = test_config(&dir);
    customize(&mut config);
    let app = Application::build(&config).await.expect("the app builds");
    let address = format!("http://{}", app.local_addr());
    let console = app.console_addr().map(|a| format!("http://{a}"));
    let (shutdown, stopped) = oneshot::channel();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    TestApp {
        address,
        console,
        client: reqwest::Client::new(),
        dir,
        shutdown: Some(shutdown),
        server: Some(server),
    }
}

impl TestApp {
    /// Stops the server gracefully and waits until the database is closed.
    pub async fn stop(mut self) -> Arc<Workspace> {
        self.shutdown.take().unwrap().send(()).unwrap();
        let server = self.server.take().unwrap();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the server stops within 10 s")
            .unwrap()
            .unwrap();
        self.dir.clone()
    }

    /// Posts `body` signed with the test secret.
    pub async fn post_webhook(&self, body: &str) -> Response {
        self.post_raw(
            body.as_bytes().to_vec(),
            &[("cobalt-verification", &sign(body.as_bytes()))],
        )
        .await
    }

    pub async fn post_raw(&self, body: Vec<u8>, headers: &[(&str, &str)]) -> Response {
        let mut request = self
            .client
            .post(format!("{}/webhooks/cobalt", self.address))
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        checked(request.send().await.expect("the server answers"))
    }

    /// GET with the test token.
    pub async fn get(&self, path: &str) -> Response {
        self.get_with(path, Some(TOKEN)).await
    }

    pub async fn get_with(&self, path: &str, token: Option<&str>) -> Response {
        let mut request = self.client.get(format!("{}{path}", self.address));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        checked(request.send().await.expect("the server answers"))
    }

    /// Any request, with `token` as bearer and `body` as JSON.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.address));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        json_of(checked(request.send().await.expect("the server answers"))).await
    }

    /// `PUT /v1/jobs/{job_id}` with the submit token.
    pub async fn register(&self, job_id: &str, body: Value) -> (StatusCode, Value) {
        self.call(
            reqwest::Method::PUT,
            &format!("/v1/jobs/{job_id}"),
            Some(SUBMIT_TOKEN),
            Some(&body),
            &[],
        )
        .await
    }

    /// `GET /metrics` (Prometheus text) with the test token.
    pub async fn metrics(&self) -> String {
        let response = self
            .client
            .get(format!("{}/metrics", self.address))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("the server answers");
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    /// GET with the test token, as status and JSON.
    pub async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        json_of(self.get(path).await).await
    }

    pub async fn count(&self, table: &str) -> i64 {
        self.dir.count(table).await
    }
}

impl std::ops::Deref for TestApp {
    type Target = Workspace;

    /// The test's workspace: its database helpers.
    fn deref(&self) -> &Workspace {
        &self.dir
    }
}

/// Every answer the service gives is JSON.
fn checked(response: Response) -> Response {
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(
        content_type.as_deref(),
        Some("application/json"),
        "answer {} is not JSON",
        response.status()
    );
    response
}

/// POSTs `body`, signed with the test secret, to `url`; for tasks that
/// cannot borrow the `TestApp`.
pub async fn post_signed(client: &reqwest::Client, url: &str, body: String) -> Response {
    client
        .post(url)
        .header("cobalt-verification", sign(body.as_bytes()))
        .body(body)
        .send()
        .await
        .expect("the server answers")
}

pub async fn json_of(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let body = response.json().await.expect("a JSON body");
    (status, body)
}
