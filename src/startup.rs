//! Building and running the server: the one path `main` and the tests share.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::audit::{self, Audit};
use crate::auth::ApiTokens;
use crate::capacity::{self, Place, Places};
use crate::cobalt;
use crate::config::Config;
use crate::console::{self, ConsoleState};
use crate::linger::Linger;
use crate::monitoring;
use crate::pagination::Cursors;
use crate::reconcile::{self, Reconciler};
use crate::retention;
use crate::routes::{self, AppState, TimeLimits};
use crate::signature::Verifier;
use crate::store::Store;
use crate::tls;

/// Largest request head (request line and headers) a client may send; a
/// larger one is answered 431. Cobalt's are well under 2 KiB.
const MAX_HEAD_BYTES: usize = 32 * 1024;

/// How often the SQLite planner's statistics are refreshed.
const STATISTICS_EVERY: Duration = Duration::from_secs(6 * 60 * 60);
/// Most often a full set of connections is logged.
const FULL_REPORTED_EVERY: Duration = Duration::from_secs(60);

/// A server with its database open and migrated and its socket bound.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    /// The operator console's own listener and routes, when it is on.
    console: Option<(TcpListener, axum::Router)>,
    store: Store,
    audit: Audit,
    /// Client connections open on both ports, capped.
    connections: Places,
    header_read_timeout: Duration,
    /// Longest shutdown waits for requests in flight.
    drain_timeout: Duration,
    /// Present when the server speaks HTTPS.
    tls: Option<TlsAcceptor>,
    /// The background recovery sweep, stopped at shutdown.
    reconcile: Option<tokio::task::JoinHandle<()>>,
}

impl Application {
    /// Binds the listener (port 0 picks a free port;
    /// [`Application::local_addr`] tells which), then opens and migrates the
    /// database.
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        let listener = capacity::listen(config.listen).map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {}: {}",
                config.listen,
                crate::os_error::describe(&e)
            )
        })?;
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
        // The first line says what runs: counts of secrets, never secrets.
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            listen = %format_args!("{}://{}", config.scheme(), listener.local_addr()?),
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

        // The console listens apart from the webhook port, or not at all.
        let console_listener = match config.console_listen {
            Some(address) => Some(capacity::listen(address).map_err(|e| {
                anyhow::anyhow!(
                    "cannot listen on {address} (console_listen): {}",
                    crate::os_error::describe(&e)
                )
            })?),
            None => None,
        };
        let tls = match (&config.tls_cert_path, &config.tls_key_path) {
            (Some(cert), Some(key)) => Some(
                tls::acceptor(cert, key, Duration::from_secs(config.tls_reload_check_secs))
                    .context("cannot load the TLS certificate")?,
            ),
            _ => None,
        };
        let store = Store::open(&store_options).await?;
        if config.payload_retention_days > 0 {
            let days = u64::from(config.payload_retention_days);
            retention::spawn(
                store.clone(),
                Duration::from_secs(days * 24 * 60 * 60),
                Duration::from_secs(config.purge_interval_secs),
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
        if let Some(warning) = config.outage_warning() {
            tracing::warn!("{warning}");
        }
        for (name, why) in api_tokens.weak() {
            tracing::warn!(token = %name, "the API token `{name}` is weak: {why}; replace it");
        }
        let overdue_after = Duration::from_secs(config.overdue_after_secs);
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
        let reconcile = match (&reconciler, config.reconcile_interval_secs) {
            (Some(reconciler), secs) if secs > 0 => Some(reconcile::spawn(
                reconciler.clone(),
                Duration::from_secs(secs),
                holder_name(),
            )),
            _ => None,
        };
        // The planner's statistics follow the data as it grows.
        let statistics = store.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(STATISTICS_EVERY).await;
                if let Err(error) = statistics.refresh_statistics().await {
                    tracing::warn!(error = %error, "refreshing the planner's statistics failed");
                }
            }
        });
        let audit = Audit::start(store.clone(), config.write_timeout());
        if config.audit_retention_days > 0 {
            let days = u64::from(config.audit_retention_days);
            audit::spawn_purge(
                store.clone(),
                Duration::from_secs(days * 24 * 60 * 60),
                Duration::from_secs(config.purge_interval_secs),
            );
        }
        let state = AppState::new(routes::Shared {
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
        });
        let console = match console_listener {
            Some(listener) => {
                let zone = jiff::tz::TimeZone::get(&config.console_time_zone)
                    .context("console_time_zone")?;
                let settings = console::Settings {
                    zone,
                    https: tls.is_some(),
                    session_idle: Duration::from_secs(config.console_session_idle_secs),
                    session_lifetime: Duration::from_secs(config.console_session_max_secs),
                    sign_in_attempts: config.console_sign_in_attempts,
                    sign_in_window: Duration::from_secs(config.console_sign_in_window_secs),
                    trusted_proxies: console::TrustedProxies::new(&config.trusted_proxies),
                    lease_holder: holder_name(),
                    sweep_interval: Duration::from_secs(config.reconcile_interval_secs),
                };
                let console_state = ConsoleState::new(state.clone(), settings);
                tracing::info!(
                    console = %format_args!("{}://{}/ui", config.scheme(), listener.local_addr()?),
                    "the operator console is on"
                );
                Some((listener, console::router(console_state)))
            }
            None => None,
        };
        let limits = TimeLimits {
            request: config.request_timeout(),
            submission: Duration::from_millis(config.cobalt_timeout_ms),
        };
        let router = routes::router(state, limits);
        Ok(Self {
            tls,
            listener,
            router,
            console,
            store,
            audit,
            connections: Places::new(max_connections),
            header_read_timeout: Duration::from_millis(config.header_read_timeout_ms),
            drain_timeout: config.request_timeout() + Duration::from_secs(1),
            reconcile,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The console's address, when it is on.
    pub fn console_addr(&self) -> Option<SocketAddr> {
        self.console
            .as_ref()
            .and_then(|(listener, _)| listener.local_addr().ok())
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
        tracing::info!(address = %self.local_addr(), "listening");
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .max_buf_size(MAX_HEAD_BYTES)
            .keep_alive(true);
        let graceful = GracefulShutdown::new();
        tokio::pin!(shutdown);
        let connection = Connection {
            http,
            tls: self.tls.clone(),
            header_read_timeout: self.header_read_timeout,
        };
        let console = self.console.as_ref();
        let mut full_since: Option<Instant> = None;
        loop {
            // A connection is accepted only with a place for it; while all
            // are taken, new clients wait in the kernel's accept queue.
            let place = match self.connections.try_take() {
                Some(place) => place,
                None => {
                    if full_since.is_none_or(|since| since.elapsed() >= FULL_REPORTED_EVERY) {
                        tracing::warn!(
                            max_connections = self.connections.max(),
                            "every connection place is taken; new connections wait to be accepted"
                        );
                        full_since = Some(Instant::now());
                    }
                    tokio::select! {
                        place = self.connections.take() => place,
                        () = &mut shutdown => break,
                    }
                }
            };
            tokio::select! {
                accepted = self.listener.accept() => {
                    connection.serve(accepted, &self.router, Peer::Unrecorded, &graceful, place).await;
                }
                accepted = accept(console.map(|(listener, _)| listener)) => {
                    let (_, router) = console.expect("accepted on the console listener");
                    connection.serve(accepted, router, Peer::Recorded, &graceful, place).await;
                }
                () = &mut shutdown => break,
            }
        }
        drop(self.listener);
        drop(self.console);
        // Clients waiting for an outcome get the current state now.
        self.store.wakeups().close();
        if let Some(sweep) = &self.reconcile {
            sweep.abort();
        }
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

/// A connection on `listener`, or never when there is none.
async fn accept(
    listener: Option<&TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// Whether a connection's requests carry its peer's address (the console's
/// do, for its sign-in throttle; the webhook port's need not).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Peer {
    Recorded,
    Unrecorded,
}

/// How each accepted connection is served, on either listener.
struct Connection {
    http: http1::Builder,
    tls: Option<TlsAcceptor>,
    header_read_timeout: Duration,
}

impl Connection {
    async fn serve(
        &self,
        accepted: std::io::Result<(tokio::net::TcpStream, SocketAddr)>,
        router: &axum::Router,
        peer: Peer,
        graceful: &GracefulShutdown,
        place: Place,
    ) {
        match accepted {
            Ok((stream, address)) => {
                let _ = stream.set_nodelay(true);
                let linger = Linger::keep(&stream);
                let router = match peer {
                    Peer::Recorded => router
                        .clone()
                        .layer(axum::Extension(axum::extract::ConnectInfo(address))),
                    Peer::Unrecorded => router.clone(),
                };
                let service = TowerToHyperService::new(router);
                let (http, watcher) = (self.http.clone(), graceful.watcher());
                match self.tls.clone() {
                    None => {
                        tokio::spawn(async move {
                            serve_connection(http, TokioIo::new(stream), service, watcher, linger)
                                .await;
                            drop(place);
                        });
                    }
                    // The handshake runs in the connection's own task,
                    // held to the same deadline as a request head.
                    Some(acceptor) => {
                        let deadline = self.header_read_timeout;
                        tokio::spawn(async move {
                            match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
                                Ok(Ok(stream)) => {
                                    serve_connection(
                                        http,
                                        TokioIo::new(stream),
                                        service,
                                        watcher,
                                        linger,
                                    )
                                    .await;
                                }
                                Ok(Err(error)) => {
                                    tracing::debug!(error = %error, "TLS handshake failed")
                                }
                                Err(_) => tracing::debug!("TLS handshake timed out"),
                            }
                            drop(place);
                        });
                    }
                }
            }
            // Out of file descriptors, say: keep serving the connections
            // there are, and try again shortly.
            Err(error) => {
                tracing::warn!(error = %error, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Who holds the recovery lease, for the database row: host and process.
fn holder_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
    format!("{host}:{}", std::process::id())
}

/// Serves one connection until it closes, or until shutdown once its
/// request in flight is answered; then closes it, lingering unless the
/// client was too slow.
async fn serve_connection<I>(
    http: http1::Builder,
    io: I,
    service: TowerToHyperService<axum::Router>,
    watcher: Watcher,
    linger: Linger,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    // hyper's socket is dropped with this statement, before the linger.
    let ended = watcher.watch(http.serve_connection(io, service)).await;
    match ended {
        Err(error) if error.is_timeout() => {
            tracing::debug!(error = %error, "connection cut off: too slow");
            // A client too slow to send its head is owed nothing more.
            drop(linger);
        }
        Err(error) => {
            tracing::debug!(error = %error, "connection ended with an error");
            linger.close().await;
        }
        Ok(()) => linger.close().await,
    }
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
