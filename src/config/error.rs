//! Why a configuration cannot be used, in one line that names the key and
//! where its value came from (the file, or the environment variable),
//! says what the key takes in words rather than Rust's type names, and
//! never repeats the value, which may be a secret.

use std::path::Path;

use super::ENV_PREFIX;

/// A configuration that cannot be used, explained in one line that names the
/// key and where its value came from, and never repeats the value (it may
/// be a secret).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration key `{key}`{origin}: {message}")]
    Key {
        key: String,
        /// ` (in FILE)` or ` (from VARIABLE)`, when known.
        origin: String,
        message: String,
    },
    /// The file or a secrets file cannot be read.
    #[error("{0}")]
    Source(String),
}

impl ConfigError {
    /// The value of `key` cannot be used, for `message`.
    pub fn key(key: &str, message: &str) -> Self {
        Self::Key {
            key: key.into(),
            origin: String::new(),
            message: message.into(),
        }
    }

    pub(super) fn from_figment(error: &figment::Error, file: Option<&Path>) -> Self {
        use figment::error::Kind;
        if error.path.is_empty() {
            return Self::Source("the configuration cannot be read".into());
        }
        // Figment's path names a list's entries by number:
        // `outbound_webhooks.0.phi` is shown `outbound_webhooks[0].phi`,
        // and described as `outbound_webhooks.phi` is.
        let mut key = String::new();
        let mut schema_key = Vec::new();
        for part in &error.path {
            if part.bytes().all(|b| b.is_ascii_digit()) {
                key.push_str(&format!("[{part}]"));
            } else {
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(part);
                schema_key.push(part.as_str());
            }
        }
        let origin = error
            .metadata
            .as_ref()
            .map(|metadata| origin_of(metadata, &error.path[0], file))
            .unwrap_or_default();
        let message = match (&error.kind, expected(&schema_key.join("."))) {
            (Kind::UnknownField(field, _), _) => {
                return Self::Key {
                    key: if key.ends_with(field.as_str()) {
                        key
                    } else {
                        field.clone()
                    },
                    origin,
                    message: "is not a known key (config.example.toml lists them all)".into(),
                };
            }
            (_, Some(expected)) => format!("must be {expected}"),
            // Not a key of ours: no serde wording, and never the value.
            (_, None) => "cannot be read".into(),
        };
        Self::Key {
            key,
            origin,
            message,
        }
    }
}

/// Where a key's value came from, as an error names it: ` (in FILE)` or
/// ` (from VARIABLE)`; empty for a default.
pub(super) fn origin_of(metadata: &figment::Metadata, key: &str, file: Option<&Path>) -> String {
    if metadata.source.is_some() {
        file.map(|path| format!(" (in {})", path.display()))
            .unwrap_or_default()
    } else if metadata.name.contains("environment") {
        format!(" (from {ENV_PREFIX}{})", key.to_uppercase())
    } else {
        String::new()
    }
}

/// Where each key's value came from, kept with the configuration so that
/// the checks made after loading (the API tokens', Cobalt's credentials)
/// name it too.
#[derive(Debug, Clone, Default)]
pub struct Origins(std::collections::BTreeMap<String, String>);

impl Origins {
    pub(super) fn insert(&mut self, key: &str, origin: String) {
        self.0.insert(key.to_owned(), origin);
    }

    /// `error` with the origin of its key, when it names none yet. A part
    /// of a key (`outbound_webhooks[2].url`) came from where the key did.
    pub fn locate(&self, error: ConfigError) -> ConfigError {
        match error {
            ConfigError::Key {
                key,
                origin,
                message,
            } if origin.is_empty() => ConfigError::Key {
                origin: self
                    .0
                    .get(&key)
                    .or_else(|| self.0.get(key.split(['[', '.']).next().unwrap_or_default()))
                    .cloned()
                    .unwrap_or_default(),
                key,
                message,
            },
            other => other,
        }
    }
}

/// What each key takes, in words (not Rust's type names).
fn expected(key: &str) -> Option<&'static str> {
    Some(match key {
        "listen" => "an address and port, such as 127.0.0.1:8080 or 0.0.0.0:8080",
        "database_url" => "a string such as sqlite://path/to/file.db or postgres://user@host/db",
        "webhook_secrets" | "api_tokens" => "a list of strings, or one comma-separated string",
        "allow_unsigned" => "true or false",
        "body_limit_bytes"
        | "header_read_timeout_ms"
        | "request_timeout_ms"
        | "write_timeout_ms"
        | "write_batch_size"
        | "write_queue_capacity"
        | "sqlite_mmap_bytes"
        | "max_connections"
        | "max_waiters"
        | "max_database_bytes"
        | "purge_interval_secs"
        | "tls_reload_check_secs" => "a whole number",
        "overdue_after_secs"
        | "reconcile_interval_secs"
        | "cobalt_timeout_ms"
        | "console_session_idle_secs"
        | "console_session_max_secs"
        | "console_sign_in_window_secs" => "a whole number",
        "console_sign_in_attempts" => "a whole number from 1 to 4294967295",
        "trusted_proxies" => "a list of CIDR blocks, or one comma-separated string",
        "console_listen" => "an address and port, such as 127.0.0.1:8081",
        "console_time_zone" => "a time zone name such as UTC or America/New_York",
        "clinic_hours" => "opening and closing times such as \"07:00-19:00\"",
        "otlp_endpoint" => "a URL such as http://collector:4318",
        "cobalt_api_url" => "a URL such as https://api.usecobalt.com",
        "cobalt_client_id" | "cobalt_client_secret" | "cobalt_access_token" => "a string",
        "cobalt_access_tokens" => {
            "a list of REFERENCE_ID:TOKEN strings, or one comma-separated string"
        }
        "read_pool_size"
        | "sqlite_cache_kib"
        | "payload_retention_days"
        | "reconcile_lookback_days"
        | "reconcile_max_jobs"
        | "audit_retention_days"
        | "cobalt_requests_per_sec" => "a whole number from 0 to 4294967295",
        "change_retention_days" => "a whole number of days from 1 to 3650",
        "outbound_retry_delays_secs" => {
            "a list of whole numbers of seconds, or one comma-separated string"
        }
        "outbound_webhooks" => {
            "a list of [[outbound_webhooks]] tables (from the environment, one endpoint: COBALT_RECEIVER_OUTBOUND_URL and COBALT_RECEIVER_OUTBOUND_SECRET)"
        }
        "outbound_webhooks.name" | "outbound_webhooks.url" | "outbound_webhooks.secret" => {
            "a string"
        }
        "outbound_webhooks.types" => "a list such as [\"job.created\", \"job.failed\"]",
        "outbound_webhooks.phi" => "true or false",
        "tls_cert_path" | "tls_key_path" => "a file path",
        "log_filter" => "a string such as \"info\"",
        "log_format" => "\"text\" or \"json\"",
        "payload_storage" => "\"minimal\", \"full\" or \"none\"",
        "encryption_keys" => "a list of ID:BASE64 strings, or one comma-separated string",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, from_toml};
    use crate::secret::Secret;

    #[test]
    fn type_errors_say_what_the_key_takes_in_words() {
        let cases = [
            (
                "body_limit_bytes = \"abc\"",
                "`body_limit_bytes`: must be a whole number",
            ),
            (
                "body_limit_bytes = -1",
                "`body_limit_bytes`: must be a whole number",
            ),
            (
                "write_batch_size = 1.5",
                "`write_batch_size`: must be a whole number",
            ),
            ("read_pool_size = 5000000000", "from 0 to 4294967295"),
            (
                "allow_unsigned = \"maybe\"",
                "`allow_unsigned`: must be true or false",
            ),
            ("listen = \"localhost\"", "must be an address and port"),
            ("log_format = \"xml\"", "must be \"text\" or \"json\""),
            ("tls_cert_path = 5", "must be a file path"),
            ("webhook_secrets = 1.5", "must be a list of strings"),
        ];
        for (toml, expected) in cases {
            let error = from_toml(toml).unwrap_err().to_string();
            assert!(error.contains(expected), "{toml}: {error}");
            // No Rust type names, no serde wording, no doubled backticks.
            for rust in [
                "usize",
                "u32",
                "u64",
                "i64",
                "variant",
                "``",
                "invalid type",
            ] {
                assert!(!error.contains(rust), "{toml}: {error}");
            }
        }
    }

    #[test]
    fn every_key_is_described_in_words() {
        let config = Config {
            tls_cert_path: Some("c.pem".into()),
            tls_key_path: Some("k.pem".into()),
            cobalt_client_id: Some(Secret::new("ci")),
            cobalt_client_secret: Some(Secret::new("cs")),
            cobalt_access_token: Some(Secret::new("at")),
            console_listen: Some("127.0.0.1:8081".parse().unwrap()),
            otlp_endpoint: Some("http://collector:4318".into()),
            ..Config::default()
        };
        let toml::Value::Table(keys) = toml::Value::try_from(config).unwrap() else {
            panic!("a configuration is a table");
        };
        assert_eq!(keys.len(), 50, "every key, the optional ones set");
        for key in keys.keys() {
            assert!(expected(key).is_some(), "{key} has no description");
        }
    }

    #[test]
    fn errors_name_the_key_and_never_the_value() {
        let cases = [
            (
                r#"webhook_secrets = ["s"]
                listen = "whsec_leak""#,
                "`listen`",
            ),
            (r#"webhook_secrets = [1.5]"#, "`webhook_secrets"),
            (
                r#"webhook_secrets = ["s"]
                body_limit_bytes = "whsec_leak""#,
                "`body_limit_bytes`",
            ),
            (
                r#"webhook_secrets = ["s"]
                lisen = "whsec_leak""#,
                "`lisen`",
            ),
            (
                r#"webhook_secrets = ["s"]
                database_url = "sqlite::memory:""#,
                "`database_url`",
            ),
            (
                r#"webhook_secrets = ["s"]
                database_url = "sqlite://x.db?mode=memory""#,
                "`database_url`",
            ),
            (
                r#"webhook_secrets = ["s"]
                write_timeout_ms = 0"#,
                "`write_timeout_ms`",
            ),
        ];
        for (toml, key) in cases {
            let error = from_toml(toml).unwrap_err().to_string();
            assert!(error.contains(key), "{key}: {error}");
            assert!(!error.contains("whsec_leak"), "{error}");
        }
    }
}
