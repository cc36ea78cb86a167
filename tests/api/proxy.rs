//! A TCP proxy between the service and its database that a test can cut
//! and restore: a real network fault, not a mock.

use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Bytes flow both ways.
    Up,
    /// Every open connection is reset and new ones are closed at once, as
    /// when the database restarts or its host goes away.
    Cut,
    /// Connections stay open but nothing moves, as on a network partition.
    Stalled,
}

pub struct Proxy {
    pub port: u16,
    link: watch::Sender<Link>,
    task: tokio::task::JoinHandle<()>,
    connections: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    /// Listens on a loopback port and forwards to `upstream` (`host:port`).
    pub async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (link, watching) = watch::channel(Link::Up);
        let connections: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let tracked = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if *watching.borrow() == Link::Cut {
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                let watching = watching.clone();
                let relay = tokio::spawn(relay(client, upstream, watching));
                tracked.lock().unwrap().push(relay);
            }
        });
        Self {
            port,
            link,
            task,
            connections,
        }
    }

    /// A proxy in front of the PostgreSQL server of `database_url`, and
    /// the URL of the same database through it.
    pub async fn in_front_of(database_url: &str) -> (Self, String) {
        let (credentials, rest) = database_url.split_once('@').unwrap();
        let (upstream, database) = rest.split_once('/').unwrap();
        let proxy = Self::start(upstream.to_owned()).await;
        let via_proxy = format!("{credentials}@127.0.0.1:{}/{database}", proxy.port);
        (proxy, via_proxy)
    }

    pub fn set(&self, link: Link) {
        if link == Link::Cut {
            for connection in self.connections.lock().unwrap().iter() {
                connection.abort();
            }
        }
        self.link.send_replace(link);
    }

    /// Cuts the link and returns once every connection it carried is
    /// closed (an abort takes effect at the relay's next turn, and a relay
    /// busy on another thread may still forward a few bytes until then).
    pub async fn cut(&self) {
        self.set(Link::Cut);
        let relays: Vec<_> = self.connections.lock().unwrap().drain(..).collect();
        for relay in relays {
            let _ = relay.await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }
}

/// Copies bytes both ways while the link is up; holds them while stalled.
async fn relay(mut client: TcpStream, upstream: String, mut link: watch::Receiver<Link>) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let mut up = [0u8; 16 * 1024];
    let mut down = [0u8; 16 * 1024];
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        while *link.borrow() == Link::Stalled {
            if link.changed().await.is_err() {
                return;
            }
        }
        tokio::select! {
            read = client_read.read(&mut up) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => if server_write.write_all(&up[..n]).await.is_err() { return },
            },
            read = server_read.read(&mut down) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => if client_write.write_all(&down[..n]).await.is_err() { return },
            },
            changed = link.changed() => if changed.is_err() { return },
        }
    }
}
