//! Lingering close, as nginx does it: when the server ends a connection
//! while the client may still be sending (a 413 answered before the body
//! was read), it keeps reading and discarding for a bounded time and amount
//! before it closes. Closing a socket with unread data makes the kernel
//! send a reset, and a client that writes its whole body before reading
//! (many HTTP libraries do) would then see a broken pipe or a reset instead
//! of the answer; to Cobalt that is a network error, not a 413.
//!
//! hyper owns the connection's socket and closes it when the connection
//! ends, so the socket is kept open by a second descriptor taken at accept.

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Longest the server keeps reading after it has answered.
const LINGER_TIME: Duration = Duration::from_secs(5);
/// Most bytes it reads and discards then.
const LINGER_BYTES: usize = 4 * 1024 * 1024;

/// A second descriptor of an accepted socket, to drain it once hyper is done.
pub struct Linger(Option<OwnedFd>);

impl Linger {
    pub fn keep(stream: &TcpStream) -> Self {
        Self(stream.as_fd().try_clone_to_owned().ok())
    }

    /// Call once the connection has ended: stops sending, then reads and
    /// discards until the client closes, `LINGER_TIME` passes or
    /// `LINGER_BYTES` are read, and only then lets the socket close.
    pub async fn close(self) {
        let Some(fd) = self.0 else { return };
        // The descriptor shares the accepted socket's non-blocking mode.
        let Ok(mut stream) = TcpStream::from_std(std::net::TcpStream::from(fd)) else {
            return;
        };
        let _ = stream.shutdown().await;
        let deadline = Instant::now() + LINGER_TIME;
        let mut buffer = vec![0u8; 16 * 1024];
        let mut left = LINGER_BYTES;
        while left > 0 {
            match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
                Ok(Ok(read)) if read > 0 => left = left.saturating_sub(read),
                // Closed by the client, an error, or time is up.
                _ => return,
            }
        }
    }
}
