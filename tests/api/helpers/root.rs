//! Tests that need root: whether they run as root, and files made
//! immutable for the length of a test.

use super::skipped;

/// Whether the tests run as root, which making a file immutable needs;
/// says loudly that `test` is skipped when they do not.
pub fn running_as_root(test: &str) -> bool {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout == b"0\n");
    if !root {
        skipped(&format!(
            "{test}: it needs root, to make files immutable (chattr +i)"
        ));
    }
    root
}

/// Makes files immutable (`chattr +i`: even root cannot write them) until
/// dropped.
pub struct Immutable(Vec<std::path::PathBuf>);

impl Immutable {
    pub fn set(paths: Vec<std::path::PathBuf>) -> Self {
        for path in &paths {
            let status = std::process::Command::new("chattr")
                .arg("+i")
                .arg(path)
                .status();
            assert!(
                status.is_ok_and(|s| s.success()),
                "chattr +i {} failed: this test needs root and a filesystem with immutable files (ext4)",
                path.display()
            );
        }
        Self(paths)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(path)
                .status();
        }
    }
}
