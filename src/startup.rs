//! Building and running the server: the one path `main` and the tests share.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper_util::server::graceful::GracefulShutdown;

use crate::audit::{self, Audit};
use crate::auth::ApiTokens;
use crate::background::Background;
use crate::capacity::{self, Places};
use crate::cobalt;
use crate::config::Config;
use crate::console::{self, ConsoleState};
use crate::listen::{Listeners, Ports};
use crate::monitoring;
use crate::outbound;
use crate::pagination::Cursors;
use crate::reconcile::{self, Reconciler};
use crate::retention;
use crate::routes::{self, TimeLimits};
use crate::signature::Verifier;
use crate::state::{AppState, Shared};
use crate::store::{self, Store, StoreOptions};
use crate::tls;

/// Longest the background tasks may take to stop at shutdown.
const BACKGROUND_STOP: Duration = Duration::from_secs(1);

/// How often the SQLite planner's statistics are refreshed.
const STATISTICS_EVERY: Duration = Duration::from_secs(6 * 60 * 60);

/// A server with its database open and migrated and its ports bound.
pub struct Application {
    listeners: Listeners,
    router: axum::Router,
    /// The operator console's routes, when it is on.
    console: Option<axum::Router>,
    store: Store,
    audit: Audit,
    /// Longest shutdown waits for requests in flight.
    drain_timeout: Duration,
    /// Whether "listening" was logged already, while waiting for the
    /// database.
    announced: bool,
    /// The purges, the recovery sweep and the other background tasks,
    /// stopped at shutdown.
    background: Background,
}

impl Application {
    /// Binds the ports (port 0 picks a free port;
    /// [`Application::local_addr`] tells which), then opens and migrates the
    /// database, serving meanwhile if it must wait for it.
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        let store_options = config.store_options();
        let open_files = match capacity::raise_open_files() {
            Ok(files) => {
                if files.now != files.before {
                    tracing::info!(
                        before = files.before,
                        now = files.now,
                        "the open-file limit was raised to its hard limit"
                    );
                }
                files.now
            }
            Err(error) => {
                tracing::warn!(error = %error, "the open-file limit could not be read or raised");
                1_024
            }
        };
        let max_connections = match config.max_connections {
            0 => capacity::default_max_connections(open_files),
            set => set,
        };
        let max_waiters = match config.max_waiters {
            0 => capacity::default_max_waiters(max_connections),
            set => set,
        };
        let tls = match (&config.tls_cert_path, &config.tls_key_path) {
            (Some(cert), Some(key)) => Some(
                tls::acceptor(cert, key, config.tls_reload_check())
                    .context("cannot load the TLS certificate")?,
            ),
            _ => None,
        };
        let listeners = Listeners::bind(Ports {
            webhook: config.listen,
            console: config.console_listen,
            max_connections,
            header_read_timeout: config.header_read_timeout(),
            tls: tls.clone(),
        })?;
        // The first line says what runs: counts of secrets, never secrets.
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            listen = %format_args!("{}://{}", config.scheme(), listeners.webhook_addr()),
            database = %store_options.location(),
            webhook_secrets = config.webhook_secrets.len(),
            api_tokens = config.api_tokens.len(),
            cobalt = %if cobalt::Credentials::from_config(config).is_some() {
                format!("{} (submission on; recovery {})", config.cobalt_api_url, match config.reconcile_interval_secs {
                    0 => "on request only".to_owned(),
                    secs => format!("every {secs} s"),
                })
            } else {
                "no credentials: submission and recovery are off".to_owned()
            },
            payload_retention = %match config.payload_retention_days {
                0 => "forever".to_owned(),
                days => format!("{days} days"),
            },
            open_files,
            max_connections,
            max_waiters,
            "starting cobalt-receiver"
        );
        let (store, announced) = open_store(&store_options, &listeners).await?;
        let mut background = Background::new();
        background.spawn(
            "overdue jobs in the change feed",
            crate::feed::note_overdue_every(store.clone()),
        );
        background.spawn(
            "change purge",
            crate::feed::purge_every(
                store.clone(),
                config.change_retention(),
                config.purge_interval(),
            ),
        );
        if let Some(kept) = config.payload_retention() {
            background.spawn(
                "payload purge",
                retention::purge_every(store.clone(), kept, config.purge_interval()),
            );
        }

        let verifier = if config.allow_unsigned {
            tracing::warn!("allow_unsigned = true: deliveries are NOT authenticated");
            None
        } else {
            Some(Arc::new(Verifier::new(config.webhook_secrets.clone())))
        };
        let api_tokens = ApiTokens::new(&config.api_tokens);
        if api_tokens.is_empty() {
            tracing::warn!("no api_tokens are set: every status query will be refused");
        }
        if let Some(warning) = reconcile::outage_warning(config) {
            tracing::warn!("{warning}");
        }
        for (name, why) in api_tokens.weak() {
            tracing::warn!(token = %name, "the API token `{name}` is weak: {why}; replace it");
        }
        let overdue_after = config.overdue_after();
        let cobalt = match cobalt::Credentials::from_config(config) {
            Some(credentials) => Some(Arc::new(
                cobalt::Client::new(config, credentials).context("building the Cobalt client")?,
            )),
            None => None,
        };
        let reconciler = cobalt.clone().map(|client| {
            Arc::new(Reconciler::new(
                store.clone(),
                client,
                overdue_after,
                config.reconcile_max_jobs,
                config.reconcile_lookback_days,
            ))
        });
        let interval = config.reconcile_interval();
        if let (Some(reconciler), false) = (&reconciler, interval.is_zero()) {
            background.spawn(
                "recovery sweep",
                reconcile::sweep_every(reconciler.clone(), interval, holder_name()),
            );
        }
        // The planner's statistics follow the data as it grows.
        let statistics = store.clone();
        background.spawn("planner statistics", async move {
            loop {
                tokio::time::sleep(STATISTICS_EVERY).await;
                if let Err(error) = statistics.refresh_statistics().await {
                    tracing::warn!(error = %error, "refreshing the planner's statistics failed");
                }
            }
        });
        // The key this process seals under stays on record while it runs,
        // so rotate-keys does not retire a key still in use.
        if let Some(key_id) = config.keyring.sealing_id() {
            tracing::info!(key_id, payload_storage = ?config.payload_storage, "sealing patient data");
            let announcer = store.clone();
            background.spawn("sealing key record", async move {
                loop {
                    tokio::time::sleep(store::sealing::ANNOUNCE_EVERY).await;
                    if let Err(error) = announcer.announce_sealing_key().await {
                        tracing::warn!(error = %error, "recording the sealing key failed; retrying");
                    }
                }
            });
        } else {
            tracing::info!(payload_storage = ?config.payload_storage, "no encryption_keys: patient data is kept unsealed");
        }
        let audit = Audit::start(store.clone(), config.write_timeout());
        if let Some(kept) = config.audit_retention() {
            background.spawn(
                "audit purge",
                audit::purge_every(store.clone(), kept, config.purge_interval()),
            );
        }
        let state = AppState::new(Shared {
            store: store.clone(),
            verifier,
            api_tokens: Arc::new(api_tokens),
            body_limit: config.body_limit_bytes,
            metrics: monitoring::install(),
            cursors: Cursors::new(store.cursor_key()),
            overdue_after,
            cobalt,
            reconciler,
            audit: audit.clone(),
            signature_rejections: Arc::default(),
            waiters: Arc::new(Places::new(max_waiters)),
            outbound: config.outbound_endpoints.clone().into(),
            clinic: crate::clinic_hours::ClinicClock {
                hours: config.clinic_hours(),
                zone: config.time_zone(),
            },
        });
        if let Some(client) = &state.cobalt {
            monitoring::accounts(
                client
                    .credentials()
                    .accounts()
                    .iter()
                    .filter_map(|account| account.reference_id.as_deref()),
            );
        }
        if !config.outbound_endpoints.is_empty() {
            monitoring::outbound_endpoints(
                config.outbound_endpoints.iter().map(|e| e.name.as_str()),
            );
            let senders = outbound::sender::Senders {
                store: store.clone(),
                attempts: Arc::new(
                    outbound::attempt::Sender::new(outbound::attempt::DEFAULT_TIMEOUT)
                        .context("building the outgoing webhooks' HTTP client")?,
                ),
                schedule: config.outbound_retry_schedule(),
                holder: holder_name(),
            };
            for endpoint in &config.outbound_endpoints {
                tracing::info!(
                    endpoint = %endpoint.name,
                    url = %endpoint.url_for_display(),
                    types = ?endpoint.types,
                    phi = endpoint.phi,
                    retries_for = ?senders.schedule.total_span(),
                    "sending outgoing webhooks"
                );
                background.spawn(
                    "outgoing webhooks",
                    outbound::sender::run(senders.clone(), endpoint.clone()),
                );
            }
        }
        let console = match listeners.console_addr() {
            Some(address) => {
                let zone = jiff::tz::TimeZone::get(&config.console_time_zone)
                    .context("console_time_zone")?;
                let settings = console::Settings {
                    zone,
                    https: tls.is_some(),
                    session_idle: config.console_session_idle(),
                    session_lifetime: config.console_session_max(),
                    sign_in_attempts: config.console_sign_in_attempts,
                    sign_in_window: config.console_sign_in_window(),
                    trusted_proxies: console::TrustedProxies::new(&config.trusted_proxies),
                    lease_holder: holder_name(),
                    sweep_interval: config.reconcile_interval(),
                };
                let console_state = ConsoleState::new(state.clone(), settings);
                background.spawn(
                    "console sign-in report",
                    console_state.clone().report_refusals_every_minute(),
                );
                tracing::info!(
                    console = %format_args!("{}://{address}/ui", config.scheme()),
                    "the operator console is on"
                );
                Some(console::router(console_state))
            }
            None => None,
        };
        let limits = TimeLimits {
            request: config.request_timeout(),
            submission: config.cobalt_timeout(),
        };
        let router = routes::router(state, limits);
        Ok(Self {
            listeners,
            router,
            console,
            store,
            audit,
            drain_timeout: config.request_timeout() + Duration::from_secs(1),
            announced,
            background,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listeners.webhook_addr()
    }

    /// The console's address, when it is on.
    pub fn console_addr(&self) -> Option<SocketAddr> {
        self.listeners.console_addr()
    }

    /// Serves until SIGTERM or SIGINT.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `shutdown` completes, then stops accepting, lets
    /// requests in flight finish (within the request timeout) and closes the
    /// database.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        if !self.announced {
            tracing::info!(address = %self.local_addr(), "listening");
        }
        let graceful = GracefulShutdown::new();
        tokio::pin!(shutdown);
        // No console listener, no console routes: the webhook's stand in.
        let console = self.console.as_ref().unwrap_or(&self.router);
        loop {
            tokio::select! {
                () = self.listeners.serve_next(&self.router, console, &graceful) => {}
                () = &mut shutdown => break,
            }
        }
        drop(self.listeners);
        // Clients waiting for an outcome get the current state now.
        self.store.wakeups().close();
        // Stopped before the drain, as the recovery sweep always was: a
        // sweep or purge under way ends at its next wait.
        self.background.shutdown(BACKGROUND_STOP).await;
        if tokio::time::timeout(self.drain_timeout, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("requests still in flight at shutdown were cut off");
        }
        // What was looked at before shutdown is on record.
        self.audit.flush().await;
        self.store.close().await;
        tracing::info!("stopped; database closed");
        Ok(())
    }
}

/// The first wait for a database that cannot be reached at start, doubled
/// after each failed try up to `LAST_RETRY`.
const FIRST_RETRY: Duration = Duration::from_millis(500);
const LAST_RETRY: Duration = Duration::from_secs(10);

/// Opens and migrates the database. When it cannot be reached at all
/// (PostgreSQL down, or out of connection slots), the process does not
/// exit: it serves both ports meanwhile, alive (`/healthz` 200) but not
/// ready, every other request answered 503 at once, and tries again with
/// a capped back-off until the database answers; then migrations run and
/// the service starts. Any other failure ends the start. Says whether it
/// logged "listening" (it did if it waited).
async fn open_store(
    options: &StoreOptions,
    listeners: &Listeners,
) -> anyhow::Result<(Store, bool)> {
    let why = match Store::open(options).await {
        Ok(store) => return Ok((store, false)),
        Err(error) if store::cannot_reach(&error) => error,
        Err(error) => return Err(error),
    };
    tracing::error!(
        error = %why,
        "db: waiting for the database: alive, not ready, every request answered 503 until it can be reached"
    );
    tracing::info!(address = %listeners.webhook_addr(), "listening");
    let waiting = routes::health::while_waiting();
    let graceful = GracefulShutdown::new();
    let mut delay = FIRST_RETRY;
    loop {
        let attempt = async move {
            tokio::time::sleep(delay).await;
            Store::open(options).await
        };
        tokio::pin!(attempt);
        let opened = loop {
            tokio::select! {
                opened = &mut attempt => break opened,
                () = listeners.serve_next(&waiting, &waiting, &graceful) => {}
            }
        };
        match opened {
            Ok(store) => {
                tracing::info!("db: the database can be reached; migrations applied; starting");
                return Ok((store, true));
            }
            Err(error) if store::cannot_reach(&error) => {
                tracing::debug!(error = %error, "db: still waiting for the database");
                delay = (delay * 2).min(LAST_RETRY);
            }
            Err(error) => return Err(error),
        }
    }
}

/// Who holds the recovery lease, for the database row: host and process.
fn holder_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
    format!("{host}:{}", std::process::id())
}

/// Completes on SIGINT (ctrl-c) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        tokio::signal::ctrl_c()
            .await
            .expect("installing the SIGINT handler");
    };
    #[cfg(unix)]
    let terminate = async {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler")
            .recv()
            .await;
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received; finishing requests in flight");
}
