//! The configuration's schema: every key ([`Config`]) with its default,
//! the typed accessors the rest of the service reads (durations, the
//! storage settings), and the rules a value must follow.
//!
//! Values come from built-in defaults, then an optional TOML file, then
//! `COBALT_RECEIVER_*` environment variables ([`load`]); a value that
//! cannot be used is a [`ConfigError`] naming its key. Once [`load`]
//! returns, every key holds a value its rules allow, except the rules of
//! `api_tokens` and the `cobalt_*` credentials, which `auth::check_tokens`
//! and `cobalt::Credentials::check` apply (this module sits below both).
//! Every key is documented in `config.example.toml`.

mod error;
mod load;
mod outbound;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use self::error::{ConfigError, Origins};
#[cfg(test)]
pub(crate) use self::load::from_toml;
pub use self::load::{from_figment, load};
pub use self::outbound::{MAX_ENDPOINTS, OutboundEndpoint, OutboundWebhook};
use crate::clinic_hours::ClinicHours;
use crate::outbound::schedule::{DEFAULT_RETRY_DELAYS_SECS, RetrySchedule};
use crate::payload_storage::PayloadStorage;
use crate::sealing::Keyring;
use crate::secret::{self, Secret};
use crate::store::StoreOptions;

/// Prefix of the environment variables that override the file.
pub const ENV_PREFIX: &str = "COBALT_RECEIVER_";

/// Most retries of an outgoing webhook, and the longest wait before one:
/// a longer schedule is better served by the change feed, which the app
/// can read when it is back.
const MAX_RETRY_DELAYS: usize = 30;
const MAX_RETRY_DELAY_SECS: u64 = 24 * 60 * 60;
/// Ten years: longer is a mistake (days taken for hours?), not a policy.
const MAX_CHANGE_RETENTION_DAYS: u32 = 3650;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on (`host:port`).
    pub listen: SocketAddr,
    /// The database, which also chooses the engine: `sqlite://path` (the
    /// file is created if missing) or `postgres://user@host:port/database`
    /// (`postgresql://` too, with `?sslmode=…` as needed).
    #[serde(serialize_with = "url_without_password")]
    pub database_url: String,
    /// Active webhook secrets; a delivery signed with any one is accepted.
    #[serde(deserialize_with = "crate::secret::deserialize_list")]
    pub webhook_secrets: Vec<Secret>,
    /// Bearer tokens of the API: `NAME:PERMISSIONS:TOKEN` (PERMISSIONS
    /// among read, submit, operate, joined by `+`), or a bare token, which
    /// may read. TOKEN may be `sha256:<hex digest of the token>`.
    #[serde(deserialize_with = "crate::secret::deserialize_list")]
    pub api_tokens: Vec<Secret>,
    /// Accept unsigned deliveries. Only for local experiments.
    pub allow_unsigned: bool,
    /// Largest webhook body accepted, in bytes.
    pub body_limit_bytes: usize,
    /// Longest a client may take to send a request's headers, in
    /// milliseconds; a slower connection is closed (slow-loris clients).
    pub header_read_timeout_ms: u64,
    /// Longest a request may take before it is answered 503, in milliseconds.
    pub request_timeout_ms: u64,
    /// Longest a webhook waits to commit before it is answered 503, in milliseconds.
    pub write_timeout_ms: u64,
    /// Connections (threads) that serve status queries; one per core by default.
    pub read_pool_size: u32,
    /// Most deliveries committed in one transaction (group commit).
    pub write_batch_size: usize,
    /// Deliveries that may wait for the writer; when that many wait, a new
    /// one is answered 503 at once.
    pub write_queue_capacity: usize,
    /// SQLite page cache of each connection, in KiB.
    pub sqlite_cache_kib: u32,
    /// Bytes of the database file each connection may memory-map (0: none).
    pub sqlite_mmap_bytes: u64,
    /// Refuse writes (503) once the database file would exceed this many
    /// bytes, so it cannot fill the disk (0: no limit).
    pub max_database_bytes: u64,
    /// Days a raw payload (patient data) is kept; the event's id, outcome
    /// and job state are kept forever. 0 keeps payloads forever.
    pub payload_retention_days: u32,
    /// Seconds between two purges of expired payloads.
    pub purge_interval_secs: u64,
    /// How much of each delivery's body is kept: `minimal` (all but the
    /// note and its subject, each replaced by its SHA-256 and length),
    /// `full` (the bytes Cobalt signed) or `none`.
    pub payload_storage: PayloadStorage,
    /// Keys that seal patient data at rest (stored payloads and MRNs), as
    /// `ID:BASE64` of 32 random bytes (`cobalt-receiver generate-key ID`
    /// prints one). The first seals; every listed key opens. Unset: kept
    /// unsealed.
    #[serde(deserialize_with = "crate::secret::deserialize_list")]
    pub encryption_keys: Vec<Secret>,
    /// PEM certificate chain for HTTPS; with `tls_key_path`, the server
    /// speaks HTTPS only. Reloaded on SIGHUP or when the file changes.
    #[serde(deserialize_with = "empty_is_unset")]
    pub tls_cert_path: Option<PathBuf>,
    /// PEM private key for HTTPS.
    #[serde(deserialize_with = "empty_is_unset")]
    pub tls_key_path: Option<PathBuf>,
    /// Seconds between two checks of the TLS files for a renewal.
    pub tls_reload_check_secs: u64,
    /// Most client connections at once, on both ports; past it, new ones
    /// wait in the kernel's queue until one closes. 0: half the open-file
    /// limit left after a reserve of 256.
    pub max_connections: usize,
    /// Most clients waiting for an outcome (`?wait=`) at once; past it, a
    /// new one is answered 503 at once. 0: half of `max_connections`; at
    /// most that when set.
    pub max_waiters: usize,
    /// Seconds a registered job may wait for its outcome before it is overdue.
    pub overdue_after_secs: u64,
    /// Seconds between two recovery sweeps against Cobalt's API (0: none).
    pub reconcile_interval_secs: u64,
    /// Days back the recovery sweep looks for events Cobalt failed to deliver.
    pub reconcile_lookback_days: u32,
    /// Most overdue jobs one sweep asks Cobalt about, oldest first.
    pub reconcile_max_jobs: u32,
    /// Cobalt's API, for submitting notes and recovering events.
    pub cobalt_api_url: String,
    /// The application's `client_id` at Cobalt.
    pub cobalt_client_id: Option<Secret>,
    /// The application's `client_secret` at Cobalt.
    pub cobalt_client_secret: Option<Secret>,
    /// The `access_token` of the linked EMR account (the default one).
    pub cobalt_access_token: Option<Secret>,
    /// Access tokens of further linked accounts, as
    /// `ACCESS_TOKEN_REFERENCE_ID:TOKEN`.
    #[serde(deserialize_with = "crate::secret::deserialize_list")]
    pub cobalt_access_tokens: Vec<Secret>,
    /// Most calls a second to Cobalt's API.
    pub cobalt_requests_per_sec: u32,
    /// Longest a call to Cobalt's API may take, in milliseconds.
    pub cobalt_timeout_ms: u64,
    /// Address of the operator console's own listener (`host:port`); off
    /// when unset. HTTPS with the TLS settings above when they are set.
    #[serde(deserialize_with = "empty_is_unset")]
    pub console_listen: Option<SocketAddr>,
    /// Seconds of inactivity after which a console session ends (15 minutes).
    pub console_session_idle_secs: u64,
    /// Seconds after sign-in at which a console session ends, however
    /// busy (12 hours).
    pub console_session_max_secs: u64,
    /// The clinic's time zone (IANA name): the console's "today".
    pub console_time_zone: String,
    /// The clinic's opening hours each day, `HH:MM-HH:MM` in
    /// `console_time_zone` (`cobalt_receiver_clinic_open` is 1 within
    /// them): when no delivery while jobs are pending is worth an alert.
    pub clinic_hours: String,
    /// Refused console sign-ins from one client address, within
    /// `console_sign_in_window_secs`, after which its sign-ins are answered
    /// 429 until the window passes.
    pub console_sign_in_attempts: u32,
    /// The window of `console_sign_in_attempts`, in seconds.
    pub console_sign_in_window_secs: u64,
    /// Proxies (CIDR blocks, as `10.0.0.0/8` or `::1/128`) whose
    /// `X-Forwarded-For` names the console's client; from anyone else,
    /// the client is the peer address.
    #[serde(deserialize_with = "string_list")]
    pub trusted_proxies: Vec<String>,
    /// Days audit rows are kept (who looked at what). 0 keeps them forever.
    pub audit_retention_days: u32,
    /// Days a change of a job's state is kept in the change feed (1 to
    /// 3650): how far back the clinic's app can catch up.
    pub change_retention_days: u32,
    /// Seconds before each retry of an outgoing webhook not delivered (1
    /// to 30 delays, each 1 to 86400); the message is failed after the
    /// last. Each delay is lengthened by up to a fifth at random.
    #[serde(deserialize_with = "number_list")]
    pub outbound_retry_delays_secs: Vec<u64>,
    /// Endpoints of the clinic's app that changes of job state are pushed
    /// to, signed per Standard Webhooks (at most 16).
    pub outbound_webhooks: Vec<OutboundWebhook>,
    /// Where traces go over OTLP, as `OTEL_EXPORTER_OTLP_ENDPOINT` (which
    /// wins when set); traces are off when neither is set.
    #[serde(deserialize_with = "empty_is_unset")]
    pub otlp_endpoint: Option<String>,
    /// Log filter when `RUST_LOG` is unset (`tracing_subscriber::EnvFilter` syntax).
    pub log_filter: String,
    /// `text` for people, `json` for one object a line for a log collector.
    pub log_format: LogFormat,
    /// Where each key's value came from (not a key).
    #[serde(skip)]
    pub origins: Origins,
    /// `encryption_keys`, read (not a key; set once the configuration is
    /// validated).
    #[serde(skip)]
    pub keyring: Keyring,
    /// `outbound_webhooks`, read (not a key; set once the configuration is
    /// validated).
    #[serde(skip)]
    pub outbound_endpoints: Vec<OutboundEndpoint>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: "sqlite://cobalt-receiver.db".into(),
            webhook_secrets: Vec::new(),
            api_tokens: Vec::new(),
            allow_unsigned: false,
            body_limit_bytes: 1024 * 1024,
            header_read_timeout_ms: 5_000,
            request_timeout_ms: 4_000,
            write_timeout_ms: 2_000,
            read_pool_size: one_per_core(),
            write_batch_size: 256,
            write_queue_capacity: 4096,
            sqlite_cache_kib: 4096,
            sqlite_mmap_bytes: 0,
            max_database_bytes: 0,
            payload_retention_days: 30,
            purge_interval_secs: 600,
            payload_storage: PayloadStorage::Minimal,
            encryption_keys: Vec::new(),
            tls_cert_path: None,
            tls_key_path: None,
            tls_reload_check_secs: 10,
            max_connections: 0,
            max_waiters: 0,
            overdue_after_secs: 600,
            reconcile_interval_secs: 300,
            reconcile_lookback_days: 2,
            reconcile_max_jobs: 100,
            cobalt_api_url: "https://api.usecobalt.com".into(),
            cobalt_client_id: None,
            cobalt_client_secret: None,
            cobalt_access_token: None,
            cobalt_access_tokens: Vec::new(),
            cobalt_requests_per_sec: 5,
            cobalt_timeout_ms: 10_000,
            console_listen: None,
            console_session_idle_secs: 900,
            console_session_max_secs: 12 * 3600,
            console_time_zone: "UTC".into(),
            clinic_hours: "07:00-19:00".into(),
            console_sign_in_attempts: 10,
            console_sign_in_window_secs: 300,
            trusted_proxies: Vec::new(),
            // Six years, as HIPAA keeps its documentation.
            audit_retention_days: 6 * 366,
            change_retention_days: 30,
            outbound_retry_delays_secs: DEFAULT_RETRY_DELAYS_SECS.to_vec(),
            outbound_webhooks: Vec::new(),
            otlp_endpoint: None,
            log_filter: "info".into(),
            log_format: LogFormat::Text,
            origins: Origins::default(),
            keyring: Keyring::default(),
            outbound_endpoints: Vec::new(),
        }
    }
}

/// Readers are CPU-bound while the database sits in the OS page cache, so
/// more threads than cores only contend (measured: 2 readers served 43-55k
/// reads/s on 2 cores where 4 served 33-41k, and held 20 MiB less).
fn one_per_core() -> u32 {
    std::thread::available_parallelism().map_or(2, |n| u32::try_from(n.get()).unwrap_or(u32::MAX))
}

/// A number of days as a duration.
fn days(days: u32) -> Duration {
    Duration::from_secs(u64::from(days) * 24 * 60 * 60)
}

/// The keys given in milliseconds, seconds or days, as durations: the
/// keys keep their units (they are the files' and variables' names), the
/// code reads durations.
impl Config {
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }

    pub fn cobalt_timeout(&self) -> Duration {
        Duration::from_millis(self.cobalt_timeout_ms)
    }

    /// Between two purges, of payloads and of audit rows alike.
    pub fn purge_interval(&self) -> Duration {
        Duration::from_secs(self.purge_interval_secs)
    }

    pub fn tls_reload_check(&self) -> Duration {
        Duration::from_secs(self.tls_reload_check_secs)
    }

    pub fn overdue_after(&self) -> Duration {
        Duration::from_secs(self.overdue_after_secs)
    }

    /// Between two scheduled recovery sweeps; zero when none is scheduled.
    pub fn reconcile_interval(&self) -> Duration {
        Duration::from_secs(self.reconcile_interval_secs)
    }

    pub fn console_session_idle(&self) -> Duration {
        Duration::from_secs(self.console_session_idle_secs)
    }

    pub fn console_session_max(&self) -> Duration {
        Duration::from_secs(self.console_session_max_secs)
    }

    pub fn console_sign_in_window(&self) -> Duration {
        Duration::from_secs(self.console_sign_in_window_secs)
    }

    /// How long a raw payload is kept; `None` when kept forever.
    pub fn payload_retention(&self) -> Option<Duration> {
        (self.payload_retention_days > 0).then(|| days(self.payload_retention_days))
    }

    /// How long an audit row is kept; `None` when kept forever.
    pub fn audit_retention(&self) -> Option<Duration> {
        (self.audit_retention_days > 0).then(|| days(self.audit_retention_days))
    }

    /// How long a change of a job's state stays in the change feed.
    pub fn change_retention(&self) -> Duration {
        days(self.change_retention_days)
    }

    /// `clinic_hours`, read (checked when the configuration loads).
    pub fn clinic_hours(&self) -> ClinicHours {
        self.clinic_hours
            .parse()
            .expect("clinic_hours is checked when the configuration loads")
    }

    /// `console_time_zone`, read (checked when the configuration loads).
    pub fn time_zone(&self) -> jiff::tz::TimeZone {
        jiff::tz::TimeZone::get(&self.console_time_zone)
            .expect("console_time_zone is checked when the configuration loads")
    }

    /// When an outgoing webhook not delivered is tried again.
    pub fn outbound_retry_schedule(&self) -> RetrySchedule {
        RetrySchedule::from_secs(&self.outbound_retry_delays_secs)
    }

    /// The storage settings.
    pub fn store_options(&self) -> StoreOptions {
        StoreOptions {
            database_url: self.database_url.clone(),
            read_pool_size: self.read_pool_size,
            write_timeout: self.write_timeout(),
            write_batch_size: self.write_batch_size,
            write_queue_capacity: self.write_queue_capacity,
            cache_kib: self.sqlite_cache_kib,
            mmap_bytes: self.sqlite_mmap_bytes,
            max_database_bytes: self.max_database_bytes,
            overdue_after: self.overdue_after(),
            payload_storage: self.payload_storage,
            keyring: self.keyring.clone(),
        }
    }

    /// Refuses to serve unsigned deliveries unless that was asked for
    /// explicitly. Only the commands that check signatures need a secret;
    /// `migrate`, `check-config` and `healthcheck` do not.
    pub fn require_webhook_secret(&self) -> Result<(), ConfigError> {
        if self.webhook_secrets.is_empty() && !self.allow_unsigned {
            return Err(ConfigError::key(
                "webhook_secrets",
                "no webhook secret is set; set one, or allow_unsigned = true for local experiments",
            ));
        }
        Ok(())
    }

    /// `outbound_webhooks` read as the sender uses them (as loading the
    /// configuration does), for a configuration built in code.
    pub fn read_outbound_webhooks(&mut self) -> Result<(), ConfigError> {
        self.outbound_endpoints = outbound::parse(&self.outbound_webhooks)?;
        Ok(())
    }

    /// Checks the rules that span keys or that types cannot express.
    fn validate(mut self) -> Result<Self, ConfigError> {
        self.keyring = Keyring::parse(&self.encryption_keys)
            .map_err(|error| ConfigError::key("encryption_keys", &error.to_string()))?;
        self.outbound_endpoints = outbound::parse(&self.outbound_webhooks)?;
        if !(1..=MAX_RETRY_DELAYS).contains(&self.outbound_retry_delays_secs.len()) {
            return Err(ConfigError::key(
                "outbound_retry_delays_secs",
                &format!("must list 1 to {MAX_RETRY_DELAYS} delays"),
            ));
        }
        if let Some(position) = self
            .outbound_retry_delays_secs
            .iter()
            .position(|delay| !(1..=MAX_RETRY_DELAY_SECS).contains(delay))
        {
            return Err(ConfigError::key(
                "outbound_retry_delays_secs",
                &format!(
                    "entry {position} is out of range: each delay must be 1 to {MAX_RETRY_DELAY_SECS} seconds (a day)"
                ),
            ));
        }
        if !(1..=MAX_CHANGE_RETENTION_DAYS).contains(&self.change_retention_days) {
            return Err(ConfigError::key(
                "change_retention_days",
                &format!("must be 1 to {MAX_CHANGE_RETENTION_DAYS} (ten years)"),
            ));
        }
        if self.webhook_secrets.iter().any(|s| s.expose().is_empty()) {
            return Err(ConfigError::key("webhook_secrets", "a secret is empty"));
        }
        match (&self.tls_cert_path, &self.tls_key_path) {
            (Some(_), None) => {
                return Err(ConfigError::key(
                    "tls_key_path",
                    "is needed with tls_cert_path",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::key(
                    "tls_cert_path",
                    "is needed with tls_key_path",
                ));
            }
            _ => {}
        }
        crate::store::Engine::check(&self.database_url)
            .map_err(|reason| ConfigError::key("database_url", &reason))?;
        if jiff::tz::TimeZone::get(&self.console_time_zone).is_err() {
            return Err(ConfigError::key(
                "console_time_zone",
                "is not a time zone name such as UTC or America/New_York",
            ));
        }
        if let Err(why) = self.clinic_hours.parse::<ClinicHours>() {
            return Err(ConfigError::key("clinic_hours", why));
        }
        for proxy in &self.trusted_proxies {
            if proxy.parse::<ipnet::IpNet>().is_err() && proxy.parse::<std::net::IpAddr>().is_err()
            {
                return Err(ConfigError::key(
                    "trusted_proxies",
                    "each entry must be an address or a CIDR block, such as 10.0.0.0/8",
                ));
            }
        }
        if self.max_connections > 0 && self.max_waiters > self.max_connections / 2 {
            return Err(ConfigError::key(
                "max_waiters",
                "must be at most half of max_connections, so deliveries always find a connection",
            ));
        }
        if self.console_listen.is_some() && self.console_listen == Some(self.listen) {
            return Err(ConfigError::key(
                "console_listen",
                "must differ from listen: the console never shares the webhook port",
            ));
        }
        for (key, value) in [
            ("body_limit_bytes", self.body_limit_bytes as u64),
            ("header_read_timeout_ms", self.header_read_timeout_ms),
            ("request_timeout_ms", self.request_timeout_ms),
            ("write_timeout_ms", self.write_timeout_ms),
            ("read_pool_size", u64::from(self.read_pool_size)),
            ("write_batch_size", self.write_batch_size as u64),
            ("write_queue_capacity", self.write_queue_capacity as u64),
            ("purge_interval_secs", self.purge_interval_secs),
            ("tls_reload_check_secs", self.tls_reload_check_secs),
            ("overdue_after_secs", self.overdue_after_secs),
            (
                "reconcile_lookback_days",
                u64::from(self.reconcile_lookback_days),
            ),
            ("reconcile_max_jobs", u64::from(self.reconcile_max_jobs)),
            (
                "cobalt_requests_per_sec",
                u64::from(self.cobalt_requests_per_sec),
            ),
            ("cobalt_timeout_ms", self.cobalt_timeout_ms),
            ("console_session_idle_secs", self.console_session_idle_secs),
            ("console_session_max_secs", self.console_session_max_secs),
            (
                "console_sign_in_attempts",
                u64::from(self.console_sign_in_attempts),
            ),
            (
                "console_sign_in_window_secs",
                self.console_sign_in_window_secs,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::key(key, "must be greater than 0"));
            }
        }
        Ok(self)
    }

    /// The scheme, `http` or `https`, the server speaks on `listen`.
    pub fn scheme(&self) -> &'static str {
        if self.tls_cert_path.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// A database URL as check-config prints it: the password, in the user
/// part or in a `password=` parameter, shown as `[redacted]`.
fn url_without_password<S: Serializer>(url: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&secret::redact_url(url))
}

/// A list of plain strings, read as [`secret::deserialize_list`] reads secrets.
fn string_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    Ok(secret::deserialize_list(deserializer)?
        .iter()
        .map(|item| item.expose().to_owned())
        .collect())
}

/// A list of whole numbers given as a TOML array or, from the environment,
/// as one comma-separated string (a lone number is read as a number).
fn number_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u64>, D::Error> {
    struct ListVisitor;

    impl<'de> serde::de::Visitor<'de> for ListVisitor {
        type Value = Vec<u64>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list of whole numbers or one comma-separated string")
        }

        fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Self::Value, E> {
            value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| s.parse().map_err(|_| E::custom("not a whole number")))
                .collect()
        }

        fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Self::Value, E> {
            Ok(vec![value])
        }

        fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Self::Value, E> {
            u64::try_from(value)
                .map(|value| vec![value])
                .map_err(|_| E::custom("not a whole number"))
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut numbers = Vec::new();
            while let Some(number) = seq.next_element::<u64>()? {
                numbers.push(number);
            }
            Ok(numbers)
        }
    }

    deserializer.deserialize_any(ListVisitor)
}

/// An optional setting that an empty value turns off, even over the
/// file's: `COBALT_RECEIVER_CONSOLE_LISTEN=` starts a second replica from a
/// file that gives the first one the console.
fn empty_is_unset<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let text: Option<String> = Option::deserialize(deserializer)?;
    match text.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => text.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_is_a_valid_configuration() {
        let config = from_toml(include_str!("../../config.example.toml")).unwrap();
        assert!(!config.webhook_secrets.is_empty());
        assert!(!config.api_tokens.is_empty());
    }

    /// The keys the configuration reference's table documents (the first
    /// column of each row under "## Keys").
    fn documented_keys() -> std::collections::BTreeSet<String> {
        let reference = include_str!("../../docs/configuration.md");
        let table = reference
            .split("\n## Keys\n")
            .nth(1)
            .expect("docs/configuration.md has a Keys section");
        let table = table.split("\n## ").next().unwrap_or(table);
        table
            .lines()
            .filter_map(|line| line.strip_prefix("| `"))
            .filter_map(|line| line.split(" |").next())
            .flat_map(|cell| {
                cell.split(", ")
                    .map(|key| key.trim_matches('`').to_owned())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn the_reference_documents_every_key_and_only_real_ones() {
        let shown = serde_json::to_value(Config::default()).unwrap();
        let keys: std::collections::BTreeSet<String> =
            shown.as_object().unwrap().keys().cloned().collect();
        let documented = documented_keys();
        let undocumented: Vec<_> = keys.difference(&documented).collect();
        let unknown: Vec<_> = documented.difference(&keys).collect();
        assert!(
            undocumented.is_empty(),
            "keys missing from docs/configuration.md: {undocumented:?}"
        );
        assert!(
            unknown.is_empty(),
            "docs/configuration.md documents keys that do not exist: {unknown:?}"
        );
        // And the example file names every key too.
        let example = include_str!("../../config.example.toml");
        // A list of tables is named by its header.
        let missing: Vec<_> = keys
            .iter()
            .filter(|key| {
                !example.contains(&format!("{key} =")) && !example.contains(&format!("[[{key}]]"))
            })
            .collect();
        assert!(
            missing.is_empty(),
            "not in config.example.toml: {missing:?}"
        );
    }

    #[test]
    fn an_empty_value_turns_an_optional_listener_or_path_off_over_the_file() {
        use figment::providers::{Format, Toml};
        let file = "console_listen = \"127.0.0.1:8081\"\ntls_cert_path = \"c.pem\"\ntls_key_path = \"k.pem\"";
        let config = load::from_figment(figment::Figment::new().merge(Toml::string(file))).unwrap();
        assert_eq!(
            config.console_listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 8081)))
        );
        // As the environment's `COBALT_RECEIVER_CONSOLE_LISTEN=` merges.
        let config = load::from_figment(
            figment::Figment::new()
                .merge(Toml::string(file))
                .merge(("console_listen", ""))
                .merge(("tls_cert_path", ""))
                .merge(("tls_key_path", " ")),
        )
        .unwrap();
        assert_eq!(config.console_listen, None);
        assert_eq!((config.tls_cert_path, config.tls_key_path), (None, None));
        let error = load::from_figment(figment::Figment::new().merge(("console_listen", "nope")))
            .unwrap_err()
            .to_string();
        assert!(error.contains("`console_listen`"), "{error}");
    }

    #[test]
    fn the_console_needs_a_port_of_its_own_and_a_real_time_zone() {
        let config = from_toml("console_time_zone = \"America/New_York\"").unwrap();
        assert!(config.console_listen.is_none(), "off by default");
        let error = from_toml("console_time_zone = \"Mars/Olympus\"")
            .unwrap_err()
            .to_string();
        assert!(error.contains("`console_time_zone`"), "{error}");
        let error = from_toml("listen = \"127.0.0.1:8080\"\nconsole_listen = \"127.0.0.1:8080\"")
            .unwrap_err()
            .to_string();
        assert!(error.contains("never shares the webhook port"), "{error}");
        let error = from_toml("console_session_idle_secs = 0")
            .unwrap_err()
            .to_string();
        assert!(error.contains("`console_session_idle_secs`"), "{error}");
    }

    #[test]
    fn waiters_may_take_at_most_half_the_connections() {
        assert!(from_toml("max_connections = 10\nmax_waiters = 5").is_ok());
        assert!(
            from_toml("max_waiters = 5000").is_ok(),
            "connections derived"
        );
        let error = from_toml("max_connections = 10\nmax_waiters = 6")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("`max_waiters`: must be at most half of max_connections"),
            "{error}"
        );
    }

    #[test]
    fn the_read_pool_has_one_reader_per_core_unless_set() {
        let cores = std::thread::available_parallelism().unwrap().get() as u32;
        assert_eq!(
            from_toml("allow_unsigned = true").unwrap().read_pool_size,
            cores
        );
        let set = from_toml("allow_unsigned = true\nread_pool_size = 7").unwrap();
        assert_eq!(set.read_pool_size, 7);
    }

    #[test]
    fn durations_read_each_key_in_its_own_unit() {
        let config = from_toml(
            "cobalt_timeout_ms = 1500\nconsole_session_idle_secs = 60\n\
             payload_retention_days = 2\naudit_retention_days = 0",
        )
        .unwrap();
        assert_eq!(config.cobalt_timeout(), Duration::from_millis(1500));
        assert_eq!(config.console_session_idle(), Duration::from_secs(60));
        assert_eq!(
            config.payload_retention(),
            Some(Duration::from_secs(2 * 24 * 60 * 60))
        );
        assert_eq!(config.audit_retention(), None, "0 keeps rows forever");
    }

    #[test]
    fn a_secret_is_required_to_serve_unless_unsigned_is_allowed_explicitly() {
        // Loading needs no secret: migrate and check-config work without one.
        let error = from_toml("")
            .unwrap()
            .require_webhook_secret()
            .unwrap_err()
            .to_string();
        assert!(error.contains("`webhook_secrets`"), "{error}");
        let unsigned = from_toml("allow_unsigned = true").unwrap();
        assert!(unsigned.require_webhook_secret().is_ok());
    }

    #[test]
    fn lists_come_as_arrays_or_comma_separated_strings() {
        let config = from_toml(r#"webhook_secrets = " a, b ,,c" "#).unwrap();
        let secrets: Vec<_> = config.webhook_secrets.iter().map(Secret::expose).collect();
        assert_eq!(secrets, ["a", "b", "c"]);
        let config = from_toml(
            r#"webhook_secrets = ["x"]
            api_tokens = 12345"#,
        )
        .unwrap();
        assert_eq!(config.api_tokens[0].expose(), "12345");
    }

    #[test]
    fn a_file_named_for_memory_is_still_a_file() {
        let config = from_toml(
            r#"webhook_secrets = ["s"]
            database_url = "sqlite:///data/memory-care.db""#,
        );
        assert!(config.is_ok());
    }

    #[test]
    fn secrets_are_redacted_from_debug_output() {
        let config = from_toml(
            r#"webhook_secrets = ["whsec_hidden"]
            api_tokens = ["token_hidden"]"#,
        )
        .unwrap();
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("whsec_hidden") && !debug.contains("token_hidden"),
            "{debug}"
        );
    }

    /// A secret of `bytes` random-looking bytes, as endpoints take it.
    fn whsec(bytes: usize) -> String {
        use base64::Engine;
        let key: Vec<u8> = (0..bytes).map(|n| (n * 37 + 11) as u8).collect();
        format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(key)
        )
    }

    /// One `[[outbound_webhooks]]` table.
    fn endpoint(name: &str, url: &str, secret: &str, extra: &str) -> String {
        format!(
            "[[outbound_webhooks]]\nname = \"{name}\"\nurl = \"{url}\"\nsecret = \"{secret}\"\n{extra}\n"
        )
    }

    fn endpoints(count: usize) -> String {
        (0..count)
            .map(|n| endpoint(&format!("app-{n}"), "https://a.example/h", &whsec(32), ""))
            .collect()
    }

    #[test]
    fn outbound_endpoints_are_read_with_their_defaults() {
        let config = from_toml(&format!(
            "{}{}",
            endpoint(
                "clinic_app-1",
                "https://app.clinic.example/hooks/cobalt?v=1",
                &whsec(24),
                ""
            ),
            endpoint(
                "billing",
                "http://10.0.0.7:9000/h",
                &whsec(64),
                "types = [\"job.failed\", \"job.created\"]\nphi = true"
            ),
        ))
        .unwrap();
        let [clinic, billing] = &config.outbound_endpoints[..] else {
            panic!("{:?}", config.outbound_endpoints);
        };
        assert_eq!(clinic.name, "clinic_app-1");
        assert_eq!(clinic.url.host_str(), Some("app.clinic.example"));
        assert_eq!(clinic.types, crate::domain::ChangeKind::ALL);
        assert!(!clinic.phi, "no MRN unless asked for");
        use crate::domain::ChangeKind::{Created, Failed, Overdue};
        assert_eq!(billing.types, [Failed, Created]);
        assert!(billing.wants(Failed) && !billing.wants(Overdue));
        assert!(billing.phi);
        assert!(
            from_toml("").unwrap().outbound_endpoints.is_empty(),
            "none by default"
        );
    }

    #[test]
    fn outbound_endpoints_follow_their_rules_at_each_bound() {
        let ok = |name: &str, url: &str, secret: &str, extra: &str| {
            from_toml(&endpoint(name, url, secret, extra))
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let url = "https://a.example/h";
        let long_url = format!("https://a.example/{}", "p".repeat(2048 - 18));
        assert_eq!(long_url.len(), 2048);
        // (the endpoint's TOML, the error's key and message; "" when accepted)
        let cases: Vec<(String, &str)> = vec![
            (endpoints(16), ""),
            (
                endpoints(17),
                "`outbound_webhooks`: lists 17 endpoints; at most 16 are allowed",
            ),
            (endpoint(&"n".repeat(40), url, &whsec(32), ""), ""),
            (
                endpoint(&"n".repeat(41), url, &whsec(32), ""),
                "`outbound_webhooks[0].name`: must be 1 to 40 characters, each a-z, 0-9, _ or -",
            ),
            (
                endpoint("Clinic", url, &whsec(32), ""),
                "`outbound_webhooks[0].name`: must be 1 to 40",
            ),
            (
                endpoint("clinic app", url, &whsec(32), ""),
                "`outbound_webhooks[0].name`: must be 1 to 40",
            ),
            (
                format!(
                    "[[outbound_webhooks]]\nurl = \"{url}\"\nsecret = \"{}\"",
                    whsec(32)
                ),
                "`outbound_webhooks[0].name`: must be 1 to 40 characters, each a-z, 0-9, _ or - (it is required)",
            ),
            (
                format!(
                    "{}{}{}",
                    endpoint("a", url, &whsec(32), ""),
                    endpoint("b", url, &whsec(32), ""),
                    endpoint("a", url, &whsec(32), "")
                ),
                "`outbound_webhooks[2].name`: repeats the name of outbound_webhooks[0]; names must be unique",
            ),
            (endpoint("a", &long_url, &whsec(32), ""), ""),
            (
                endpoint("a", &format!("{long_url}p"), &whsec(32), ""),
                "`outbound_webhooks[0].url`: endpoint `a`: must be at most 2048 bytes",
            ),
            (
                endpoint("a", "ftp://a.example/h", &whsec(32), ""),
                "`outbound_webhooks[0].url`: endpoint `a`: must be an http or https URL",
            ),
            (
                endpoint("a", "a.example/h", &whsec(32), ""),
                "`outbound_webhooks[0].url`: endpoint `a`: is not a URL (relative URL without a base)",
            ),
            (
                endpoint("a", "https://", &whsec(32), ""),
                "`outbound_webhooks[0].url`: endpoint `a`: is not a URL (empty host)",
            ),
            (
                endpoint("a", "", &whsec(32), ""),
                "`outbound_webhooks[0].url`: endpoint `a`: is required",
            ),
            (endpoint("a", url, &whsec(24), ""), ""),
            (
                endpoint("a", url, &whsec(23), ""),
                "`outbound_webhooks[0].secret`: endpoint `a`: decodes to 23 bytes; it must be 24 to 64",
            ),
            (endpoint("a", url, &whsec(64), ""), ""),
            (
                endpoint("a", url, &whsec(65), ""),
                "`outbound_webhooks[0].secret`: endpoint `a`: decodes to 65 bytes",
            ),
            (
                endpoint("a", url, &format!("{}!", whsec(32)), ""),
                "`outbound_webhooks[0].secret`: endpoint `a`: must be whsec_ followed by standard base64",
            ),
            (
                endpoint("a", url, whsec(32).trim_start_matches("whsec_"), ""),
                "`outbound_webhooks[0].secret`: endpoint `a`: must start with whsec_",
            ),
            (
                format!("[[outbound_webhooks]]\nname = \"a\"\nurl = \"{url}\""),
                "`outbound_webhooks[0].secret`: endpoint `a`: is required",
            ),
            (
                endpoint(
                    "a",
                    url,
                    &whsec(32),
                    "types = [\"job.created\", \"job.deleted\"]",
                ),
                "`outbound_webhooks[0].types`: endpoint `a`: entry 1 is not a type; the types are job.registered, job.created, job.failed, job.overdue",
            ),
            (
                endpoint("a", url, &whsec(32), "types = [\"created\"]"),
                "entry 0 is not a type",
            ),
            (
                endpoint(
                    "a",
                    url,
                    &whsec(32),
                    "types = [\"job.failed\", \"job.failed\"]",
                ),
                "`outbound_webhooks[0].types`: endpoint `a`: names job.failed twice",
            ),
            (
                endpoint("a", url, &whsec(32), "types = []"),
                "`outbound_webhooks[0].types`: endpoint `a`: must name at least one type",
            ),
        ];
        for (toml, expected) in cases {
            let result = from_toml(&toml).map(|_| ()).map_err(|e| e.to_string());
            if expected.is_empty() {
                assert_eq!(result, Ok(()), "{toml}");
            } else {
                let error = result.expect_err(expected);
                assert!(
                    error.starts_with("configuration key ") && error.contains(expected),
                    "{expected}: {error}"
                );
                assert!(!error.contains(&whsec(32)[6..]), "{error}");
            }
        }
        // A secret's bytes never appear in its error, even when it is
        // almost right.
        let error = ok("a", url, &format!("{}A", whsec(32)), "").unwrap_err();
        assert!(!error.contains(&whsec(32)[6..20]), "{error}");
    }

    #[test]
    fn outbound_endpoint_fields_of_the_wrong_type_are_named() {
        let url = "https://a.example/h";
        for (extra, expected) in [
            (
                "phi = \"yes\"",
                "`outbound_webhooks[0].phi`: must be true or false",
            ),
            (
                "types = \"job.failed\"",
                "`outbound_webhooks[0].types`: must be a list",
            ),
            (
                "secrett = \"x\"",
                "`outbound_webhooks[0].secrett`: is not a known key",
            ),
        ] {
            let error = from_toml(&endpoint("a", url, &whsec(32), extra))
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{extra}: {error}");
            assert!(!error.contains(&whsec(32)[6..]), "{error}");
        }
        let error = from_toml("outbound_webhooks = \"https://a.example/h\"")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("`outbound_webhooks`: must be a list of [[outbound_webhooks]] tables"),
            "{error}"
        );
    }

    #[test]
    fn outbound_secrets_and_url_passwords_never_print() {
        let secret = whsec(32);
        let config = from_toml(&endpoint(
            "a",
            "https://hook-user:hunter2pw@a.example/h",
            &secret,
            "",
        ))
        .unwrap();
        let printed = [
            format!("{config:?}"),
            crate::operator::show_config(&config).unwrap(),
            serde_json::to_string(&config).unwrap(),
        ];
        for printed in printed {
            assert!(!printed.contains(&secret[6..]), "{printed}");
            assert!(!printed.contains("hunter2pw"), "{printed}");
            assert!(printed.contains("hook-user"), "{printed}");
        }
        assert_eq!(
            config.outbound_endpoints[0].url_for_display(),
            "https://hook-user:[redacted]@a.example/h"
        );
        let shown = crate::operator::show_config(&config).unwrap();
        assert!(shown.contains("[[outbound_webhooks]]"), "{shown}");
        assert!(shown.contains("secret = \"[redacted]\""), "{shown}");
        // What check-config prints is a configuration again (the secret aside).
        let reread: toml::Table = toml::from_str(&shown).unwrap();
        assert_eq!(reread["outbound_webhooks"][0]["name"].as_str(), Some("a"));
    }

    #[test]
    fn retry_delays_and_change_retention_keep_to_their_bounds() {
        let thirty = vec!["86400"; 30].join(", ");
        let thirty_one = vec!["1"; 31].join(", ");
        for (toml, expected) in [
            (format!("outbound_retry_delays_secs = [{thirty}]"), ""),
            ("outbound_retry_delays_secs = [1]".into(), ""),
            (
                format!("outbound_retry_delays_secs = [{thirty_one}]"),
                "`outbound_retry_delays_secs`: must list 1 to 30 delays",
            ),
            (
                "outbound_retry_delays_secs = []".into(),
                "`outbound_retry_delays_secs`: must list 1 to 30 delays",
            ),
            (
                "outbound_retry_delays_secs = [5, 0]".into(),
                "`outbound_retry_delays_secs`: entry 1 is out of range: each delay must be 1 to 86400 seconds",
            ),
            (
                "outbound_retry_delays_secs = [86401]".into(),
                "entry 0 is out of range",
            ),
            (
                "outbound_retry_delays_secs = [-5]".into(),
                "`outbound_retry_delays_secs[0]`: must be a list of whole numbers",
            ),
            ("change_retention_days = 1".into(), ""),
            ("change_retention_days = 3650".into(), ""),
            (
                "change_retention_days = 0".into(),
                "`change_retention_days`: must be 1 to 3650",
            ),
            (
                "change_retention_days = 3651".into(),
                "`change_retention_days`: must be 1 to 3650",
            ),
        ] {
            let result = from_toml(&toml).map(|_| ()).map_err(|e| e.to_string());
            if expected.is_empty() {
                assert_eq!(result, Ok(()), "{toml}");
            } else {
                let error = result.unwrap_err();
                assert!(error.contains(expected), "{toml}: {error}");
            }
        }
    }

    #[test]
    fn the_default_retry_schedule_and_retention_are_read() {
        let config = from_toml("").unwrap();
        assert_eq!(config.outbound_retry_schedule(), RetrySchedule::default());
        assert_eq!(config.change_retention(), days(30));
        // As the environment gives a list: one comma-separated string.
        use figment::providers::{Format, Toml};
        let config = from_figment(
            figment::Figment::new()
                .merge(Toml::string("outbound_retry_delays_secs = [1]"))
                .merge(("outbound_retry_delays_secs", "5, 60,3600")),
        )
        .unwrap();
        assert_eq!(config.outbound_retry_delays_secs, [5, 60, 3600]);
        assert_eq!(
            config.outbound_retry_schedule().total_span(),
            Duration::from_secs(3665)
        );
        let config =
            from_figment(figment::Figment::new().merge(("outbound_retry_delays_secs", 30)))
                .unwrap();
        assert_eq!(config.outbound_retry_delays_secs, [30]);
        let error =
            from_figment(figment::Figment::new().merge(("outbound_retry_delays_secs", "5,x")))
                .unwrap_err()
                .to_string();
        assert!(error.contains("must be a list of whole numbers"), "{error}");
    }

    #[test]
    fn postgres_urls_select_postgres() {
        for url in [
            "postgres://app@127.0.0.1/cobalt",
            "postgresql://app:pw@db.internal:6432/cobalt?sslmode=verify-full",
        ] {
            let config = from_figment(figment::Figment::from(
                figment::providers::Serialized::defaults(Config {
                    database_url: url.into(),
                    ..Config::default()
                }),
            ))
            .unwrap();
            assert_eq!(
                crate::store::Engine::check(&config.database_url),
                Ok(crate::store::Engine::Postgres)
            );
        }
        let error = from_figment(figment::Figment::from(
            figment::providers::Serialized::defaults(Config {
                database_url: "mysql://app:pw@db/cobalt".into(),
                ..Config::default()
            }),
        ))
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("database_url") && !error.contains("pw"),
            "{error}"
        );
    }
}
