//! The service's ports: a connection is accepted only with a place for it
//! (`max_connections` on both ports together; past it new clients wait in
//! the kernel's accept queue), served by hyper in a task of its own, over
//! TLS when configured, and drained before it closes ([`Linger`]).

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::capacity::{Place, Places};
use crate::linger::Linger;

/// Largest request head (request line and headers) a client may send; a
/// larger one is answered 431. Cobalt's are well under 2 KiB.
const MAX_HEAD_BYTES: usize = 32 * 1024;

/// How deep the kernel's queue of connections not yet accepted may grow
/// (the system's `somaxconn` caps it): while every place is taken, new
/// clients wait there instead of being refused.
const BACKLOG: u32 = 4_096;

/// Most often a full set of connections is logged.
const FULL_REPORTED_EVERY: Duration = Duration::from_secs(60);

/// The webhook port, the console's when it is on, and the connections they
/// hold.
pub struct Listeners {
    webhook: TcpListener,
    console: Option<TcpListener>,
    connections: Places,
    connection: Connection,
    /// When a full set of connections was last logged.
    full_reported: Mutex<Option<Instant>>,
}

/// How each listener is reached and served.
pub struct Ports {
    pub webhook: SocketAddr,
    pub console: Option<SocketAddr>,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub tls: Option<TlsAcceptor>,
}

impl Listeners {
    pub fn bind(ports: Ports) -> anyhow::Result<Self> {
        let webhook = listen(ports.webhook).map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {}: {}",
                ports.webhook,
                crate::os_error::describe(&e)
            )
        })?;
        // The console listens apart from the webhook port, or not at all.
        let console = match ports.console {
            Some(address) => Some(listen(address).map_err(|e| {
                anyhow::anyhow!(
                    "cannot listen on {address} (console_listen): {}",
                    crate::os_error::describe(&e)
                )
            })?),
            None => None,
        };
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(ports.header_read_timeout)
            .max_buf_size(MAX_HEAD_BYTES)
            .keep_alive(true);
        Ok(Self {
            webhook,
            console,
            connections: Places::new(ports.max_connections),
            connection: Connection {
                http,
                tls: ports.tls,
                header_read_timeout: ports.header_read_timeout,
            },
            full_reported: Mutex::new(None),
        })
    }

    pub fn webhook_addr(&self) -> SocketAddr {
        self.webhook
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn console_addr(&self) -> Option<SocketAddr> {
        self.console
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    /// Waits for a free place and a new connection on either port, then
    /// serves that connection with its port's router in a task of its own.
    /// Cancelled, it takes nothing: a place it held is given back.
    pub async fn serve_next(
        &self,
        webhook: &axum::Router,
        console: &axum::Router,
        graceful: &GracefulShutdown,
    ) {
        let place = match self.connections.try_take() {
            Some(place) => place,
            None => {
                self.report_full();
                self.connections.take().await
            }
        };
        tokio::select! {
            accepted = self.webhook.accept() => {
                self.connection.serve(accepted, webhook, Peer::Unrecorded, graceful, place).await;
            }
            accepted = accept(self.console.as_ref()) => {
                self.connection.serve(accepted, console, Peer::Recorded, graceful, place).await;
            }
        }
    }

    fn report_full(&self) {
        let mut reported = self.full_reported.lock().expect("not poisoned");
        if reported.is_none_or(|at| at.elapsed() >= FULL_REPORTED_EVERY) {
            tracing::warn!(
                max_connections = self.connections.max(),
                "every connection place is taken; new connections wait to be accepted"
            );
            *reported = Some(Instant::now());
        }
    }
}

/// Listens on `address` with a deep accept queue.
fn listen(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(BACKLOG)
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
