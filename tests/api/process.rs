//! The compiled binary as a child process, for tests of what only a real
//! process shows: exit codes, logs, signals, crashes.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::*;

/// The environment of a server with the test secret and token.
pub const TEST_ENV: [(&str, &str); 2] = [
    ("COBALT_RECEIVER_WEBHOOK_SECRETS", SECRET),
    ("COBALT_RECEIVER_API_TOKENS", TOKEN),
];

const BINARY: &str = env!("CARGO_BIN_EXE_cobalt-receiver");

pub struct Process {
    pub child: Child,
    pub address: String,
    log: PathBuf,
}

fn command(dir: &Workspace, env: &[(&str, &str)], args: &[&str]) -> (Command, PathBuf) {
    command_limited(dir, env, args, None)
}

/// The binary's command, under an open-file limit (soft, hard) when given
/// (util-linux's `prlimit` sets it for the process it starts).
fn command_limited(
    dir: &Workspace,
    env: &[(&str, &str)],
    args: &[&str],
    open_files: Option<(u64, u64)>,
) -> (Command, PathBuf) {
    // Several servers may run on one directory, one after another.
    static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let log = dir.path().join(format!("server-{n}.log"));
    let mut command = match open_files {
        None => Command::new(BINARY),
        Some((soft, hard)) => {
            let mut command = Command::new("prlimit");
            command
                .arg(format!("--nofile={soft}:{hard}"))
                .arg("--")
                .arg(BINARY);
            command
        }
    };
    command
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("COBALT_RECEIVER_CONFIG")
        .env("COBALT_RECEIVER_LISTEN", "127.0.0.1:0")
        .env("COBALT_RECEIVER_DATABASE_URL", dir.database_url())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        // Both append, so neither writes over the other's lines.
        .stdout(append(&log))
        .stderr(append(&log));
    (command, log)
}

fn append(path: &std::path::Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
}

/// Starts the binary and waits until it says where it listens.
pub fn start(dir: &Workspace, env: &[(&str, &str)], args: &[&str]) -> Process {
    start_limited(dir, env, args, None)
}

/// [`start`], under an open-file limit (soft, hard).
pub fn start_limited(
    dir: &Workspace,
    env: &[(&str, &str)],
    args: &[&str],
    open_files: Option<(u64, u64)>,
) -> Process {
    let (mut command, log) = command_limited(dir, env, args, open_files);
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(address) = listening_address(&text) {
            return Process {
                child,
                address: format!("http://{address}"),
                log,
            };
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the server exited with {status} before listening:\n{text}");
        }
        assert!(
            Instant::now() < deadline,
            "the server did not start:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the binary to completion (for configurations it must refuse).
pub fn run(dir: &Workspace, env: &[(&str, &str)], args: &[&str]) -> (ExitStatus, String) {
    let (mut command, log) = command(dir, env, args);
    let status = command.status().unwrap();
    (status, std::fs::read_to_string(log).unwrap())
}

impl Process {
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                self.child.kill().unwrap();
                panic!("the server did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }

    pub async fn post(&self, body: &[u8], signature: &str) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("{}/webhooks/cobalt", self.address))
            .header("cobalt-verification", signature)
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        reqwest::Client::new()
            .get(format!("{}{path}", self.address))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the server said it listens, in the text or the JSON log format.
fn listening_address(log: &str) -> Option<String> {
    if let Some(rest) = log.split("listening address=").nth(1) {
        return rest.split_whitespace().next().map(str::to_owned);
    }
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["fields"]["message"] == "listening")
        .and_then(|line| line["fields"]["address"].as_str().map(str::to_owned))
}
