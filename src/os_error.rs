//! Operating-system errors in plain words, for the one `error:` line an
//! operator reads: "permission denied", not "Permission denied (os error 13)".

use std::io::{self, ErrorKind};

/// The cause of `error`, in a few lowercase words.
pub fn describe(error: &io::Error) -> String {
    let words = match error.kind() {
        ErrorKind::NotFound => "no such file or folder",
        ErrorKind::PermissionDenied => "permission denied",
        ErrorKind::AddrInUse => "the address is already in use",
        ErrorKind::AddrNotAvailable => "the address is not one of this machine's",
        ErrorKind::ConnectionRefused => "connection refused",
        ErrorKind::ConnectionReset => "the connection was reset",
        ErrorKind::TimedOut => "timed out",
        ErrorKind::IsADirectory => "it is a folder",
        ErrorKind::NotADirectory => "a part of the path is not a folder",
        ErrorKind::ReadOnlyFilesystem => "the file system is read-only",
        ErrorKind::StorageFull => "the disk is full",
        _ => return strip_os_code(&error.to_string()),
    };
    words.to_owned()
}

/// The first I/O error in a chain of causes.
pub fn find<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a io::Error> {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(io) = error.downcast_ref::<io::Error>() {
            return Some(io);
        }
        cause = error.source();
    }
    None
}

/// "Broken pipe (os error 32)" reads as "broken pipe".
fn strip_os_code(text: &str) -> String {
    let text = text.split(" (os error").next().unwrap_or(text);
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_lowercase().chain(chars).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_read_as_plain_words() {
        let refused = io::Error::from(ErrorKind::ConnectionRefused);
        assert_eq!(describe(&refused), "connection refused");
        let pipe = io::Error::from_raw_os_error(32);
        assert_eq!(describe(&pipe), "broken pipe");
        let wrapped = anyhow::Error::new(io::Error::from(ErrorKind::AddrInUse)).context("binding");
        assert_eq!(
            find(wrapped.as_ref()).map(describe).as_deref(),
            Some("the address is already in use")
        );
    }
}
