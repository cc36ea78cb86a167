//! Why an HTTP request this service made got no answer, in words an
//! operator can act on: "connection refused", "its certificate does not
//! name this host", not `Other(OtherError(CaUsedAsEndEntity))`.

use std::time::Duration;

use tokio_rustls::rustls::{self, CertificateError};

use crate::os_error;

/// The cause of `error` (from a client whose requests time out after
/// `timeout`), in a few words.
pub fn describe(error: &reqwest::Error, timeout: Duration) -> String {
    if error.is_timeout() {
        return format!("no answer within {} s", timeout.as_secs());
    }
    if let Some(tls) = find_tls(error) {
        return tls_words(tls);
    }
    if let Some(io) = os_error::find(error) {
        return os_error::describe(io);
    }
    // The innermost cause is the specific one (a DNS failure, say).
    let mut cause: &dyn std::error::Error = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// The TLS error in a chain of causes. rustls's errors reach the client
/// wrapped in I/O errors (sometimes one in another), whose `source` skips
/// the wrapped error itself: it is followed by `get_ref`.
fn find_tls<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        cause = match error.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => error.source(),
        };
    }
    None
}

fn tls_words(error: &rustls::Error) -> String {
    use CertificateError as C;
    let words = match error {
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            "the server did not answer in TLS (if it speaks plain HTTP, use an http:// URL)"
        }
        rustls::Error::InvalidCertificate(certificate) => match certificate {
            C::UnknownIssuer => {
                "its certificate is not signed by an authority this machine trusts \
                 (--insecure skips the check when probing a local address)"
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                "its certificate does not name this host"
            }
            C::Expired | C::ExpiredContext { .. } => "its certificate has expired",
            C::NotValidYet | C::NotValidYetContext { .. } => "its certificate is not valid yet",
            C::Revoked => "its certificate has been revoked",
            C::BadSignature => "its certificate's signature does not verify",
            C::Other(other) if other.to_string().contains("CaUsedAsEndEntity") => {
                "it presents a certificate authority's certificate as its own; it needs a \
                 certificate issued for its host"
            }
            other => return format!("its certificate was refused ({other})"),
        },
        rustls::Error::AlertReceived(alert) => {
            return format!("the server refused the TLS handshake ({alert:?})");
        }
        other => return format!("TLS failed: {other}"),
    };
    words.to_owned()
}
