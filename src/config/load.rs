//! Loading the configuration: built-in defaults, then an optional TOML
//! file, then `COBALT_RECEIVER_*` environment variables, then the files
//! that `COBALT_RECEIVER_*_FILE` variables name (container secret stores
//! mount secrets as files). The variables Kubernetes sets for a Service
//! named `cobalt-receiver` share the prefix and are left out. The file's
//! syntax is checked on its own first, so an error names the file as
//! given and never quotes a line of it.

use std::path::Path;

use figment::providers::{Env, Format, Toml};
use figment::{Figment, Provider};

use super::error::{Origins, origin_of};
use super::{Config, ConfigError, ENV_PREFIX};

/// Keys whose value may come from a file named by `COBALT_RECEIVER_<KEY>_FILE`
/// (container secret stores mount secrets as files).
const FILE_KEYS: [&str; 7] = [
    "webhook_secrets",
    "api_tokens",
    "cobalt_client_id",
    "cobalt_client_secret",
    "cobalt_access_token",
    "cobalt_access_tokens",
    "encryption_keys",
];

/// Loads the configuration: defaults, then `file` if given, then environment.
pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
    let mut figment = Figment::new();
    if let Some(path) = file {
        check_syntax(path)?;
        figment = figment.merge(Toml::file_exact(path));
    }
    // COBALT_RECEIVER_CONFIG names the file, and *_FILE variables name
    // files of secrets; they are not keys.
    let env = Env::prefixed(ENV_PREFIX)
        .filter(|key| {
            let key = key.as_str().to_ascii_uppercase();
            key != "CONFIG" && !key.ends_with("_FILE")
        })
        .filter(|key| !is_service_link(&key.as_str().to_ascii_lowercase()));
    figment = figment.merge(env);
    // A PostgreSQL URL holds a password: a secret store mounts it as a file.
    let variable = format!("{ENV_PREFIX}DATABASE_URL_FILE");
    if let Some(path) = std::env::var_os(&variable) {
        let url = read_secret_file(&variable, Path::new(&path))?;
        figment = figment.merge(("database_url", url.trim().to_owned()));
    }
    let mut from_files = Vec::new();
    for key in FILE_KEYS {
        let variable = format!("{ENV_PREFIX}{}_FILE", key.to_uppercase());
        if let Some(path) = std::env::var_os(&variable) {
            from_files.push((key, format!(" (from {variable})")));
            let contents = read_secret_file(&variable, Path::new(&path))?;
            figment = if key.ends_with('s') {
                // One secret a line, or comma-separated; the file wins over both.
                figment.merge((key, contents.replace('\n', ",")))
            } else {
                figment.merge((key, contents.trim().to_owned()))
            };
        }
    }
    let mut config = extract_unchecked(&figment, file)?;
    let mut origins = origins(&figment, file);
    for (key, origin) in from_files {
        origins.insert(key, origin);
    }
    config.origins = origins;
    validated(config)
}

/// Where each key present in `figment` came from.
fn origins(figment: &Figment, file: Option<&Path>) -> Origins {
    let mut origins = Origins::default();
    if let Ok(data) = figment.data() {
        for key in data.values().flat_map(|dict| dict.keys()) {
            if let Some(metadata) = figment.find_metadata(key) {
                origins.insert(key, origin_of(metadata, key, file));
            }
        }
    }
    origins
}

/// Whether `key` (after the prefix, lowercased) is one of the variables
/// Kubernetes sets in every pod for a Service named `cobalt-receiver`
/// (`COBALT_RECEIVER_SERVICE_HOST`, `COBALT_RECEIVER_PORT_8080_TCP`, …),
/// which are not configuration.
fn is_service_link(key: &str) -> bool {
    key == "port" || key.starts_with("port_") || key.starts_with("service_")
}

/// The contents of the file the environment variable `variable` names.
fn read_secret_file(variable: &str, path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| {
        ConfigError::Source(format!(
            "{variable} names {}, which cannot be read: {}",
            path.display(),
            crate::os_error::describe(&e)
        ))
    })
}

/// Reads the file once on its own, so a syntax error names the file as the
/// user gave it, with the parser's reason (figment's message quotes the
/// offending line, which may hold a secret).
fn check_syntax(path: &Path) -> Result<(), ConfigError> {
    let file = || format!("configuration file {}", path.display());
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(ConfigError::Source(format!("{} does not exist", file())));
        }
        Err(error) => {
            return Err(ConfigError::Source(format!(
                "{} cannot be read: {}",
                file(),
                crate::os_error::describe(&error)
            )));
        }
    };
    let Err(error) = toml::from_str::<toml::Table>(&text) else {
        return Ok(());
    };
    let position = error.span().map_or_else(String::new, |span| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |n| n + 1) + 1;
        format!(", line {line}, column {column}")
    });
    let reason = error.message().trim().replace('\n', "; ");
    Err(ConfigError::Source(format!(
        "{}{position}: {reason}",
        file()
    )))
}

/// Extracts and validates a configuration from any set of providers.
pub fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
    extract(figment, None)
}

fn extract(figment: Figment, file: Option<&Path>) -> Result<Config, ConfigError> {
    let mut config = extract_unchecked(&figment, file)?;
    config.origins = origins(&figment, file);
    validated(config)
}

fn extract_unchecked(figment: &Figment, file: Option<&Path>) -> Result<Config, ConfigError> {
    figment
        .extract()
        .map_err(|error| ConfigError::from_figment(&error, file))
}

/// `config` once its own checks pass; a refusal names where the key's
/// value came from.
fn validated(config: Config) -> Result<Config, ConfigError> {
    let origins = config.origins.clone();
    config.validate().map_err(|error| origins.locate(error))
}

#[cfg(test)]
pub(crate) fn from_toml(text: &str) -> Result<Config, ConfigError> {
    from_figment(Figment::new().merge(Toml::string(text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_syntax_error_names_the_file_as_given_and_the_parser_s_reason() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("receiver.toml");
        std::fs::write(
            &path,
            "webhook_secrets = [\"whsec_leak\"]\nlisten = \"127.0.0.1:8080\n",
        )
        .unwrap();
        let error = load(Some(&path)).unwrap_err().to_string();
        assert_eq!(
            error,
            format!(
                "configuration file {}, line 2, column 25: invalid basic string",
                path.display()
            )
        );

        let relative = Path::new("./no-such-dir/receiver.toml");
        let error = load(Some(relative)).unwrap_err().to_string();
        assert_eq!(
            error,
            "configuration file ./no-such-dir/receiver.toml does not exist"
        );
    }

    #[test]
    fn kubernetes_service_variables_are_not_configuration() {
        for key in [
            "port",
            "port_8080_tcp",
            "port_8080_tcp_addr",
            "service_host",
            "service_port_http",
        ] {
            assert!(is_service_link(key), "{key}");
        }
        for key in ["listen", "database_url", "write_timeout_ms"] {
            assert!(!is_service_link(key), "{key}");
        }
    }
}
