//! Building and running the server: the one path `main` and the tests share.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::auth::ApiTokens;
use crate::config::Config;
use crate::retention;
use crate::routes::{self, AppState};
use crate::signature::Verifier;
use crate::store::Store;

/// A server with its database open and migrated and its socket bound.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    store: Store,
}

impl Application {
    /// Opens the database, applies migrations and binds the listener (port 0
    /// picks a free port; [`Application::local_addr`] tells which).
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        let store = Store::open(&config.store_options()).await?;
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
        let state = AppState {
            store: store.clone(),
            verifier,
            api_tokens: Arc::new(api_tokens),
            body_limit: config.body_limit_bytes,
        };
        let router = routes::router(state, config.request_timeout());

        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        Ok(Self {
            listener,
            router,
            store,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until SIGTERM or SIGINT.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `shutdown` completes, then lets requests in flight finish
    /// and closes the database.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        tracing::info!(address = %self.local_addr(), "listening");
        let served = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await;
        self.store.close().await;
        tracing::info!("stopped; database closed");
        served.context("serving HTTP")
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
