//! Loading the configuration: built-in defaults, then an optional TOML
//! file, then `COBALT_RECEIVER_*` environment variables, then the files
//! that `COBALT_RECEIVER_*_FILE` variables name (container secret stores
//! mount secrets as files). `COBALT_RECEIVER_OUTBOUND_URL` and
//! `…_OUTBOUND_SECRET` are a shortcut for one outgoing webhook endpoint.
//! The variables Kubernetes sets for a Service named `cobalt-receiver`
//! share the prefix and are left out. The file's syntax is checked on its
//! own first, so an error names the file as given and never quotes a line
//! of it.

use std::collections::BTreeMap;
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

/// Variables of ours that are not keys: the file's name, and the parts of
/// the outgoing webhook shortcut ([`outbound_shortcut`]).
const NOT_KEYS: [&str; 3] = ["CONFIG", "OUTBOUND_URL", "OUTBOUND_SECRET"];

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
            !NOT_KEYS.contains(&key.as_str()) && !key.ends_with("_FILE")
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
    let (figment, shortcut) = outbound_shortcut(figment, |name| std::env::var(name).ok())?;
    from_files.extend(shortcut.map(|origin| ("outbound_webhooks", origin)));
    finish(&figment, file, from_files)
}

/// The configuration `figment` holds, validated; `given` names the origin
/// of keys whose value came from elsewhere than figment knows (a file of
/// secrets, the outgoing webhook shortcut).
fn finish(
    figment: &Figment,
    file: Option<&Path>,
    given: Vec<(&str, String)>,
) -> Result<Config, ConfigError> {
    let mut config = extract_unchecked(figment, file)?;
    let mut origins = origins(figment, file);
    for (key, origin) in given {
        origins.insert(key, origin);
    }
    config.origins = origins;
    validated(config)
}

/// `figment` with the one endpoint that `COBALT_RECEIVER_OUTBOUND_URL`
/// and `…_OUTBOUND_SECRET` (or `…_OUTBOUND_SECRET_FILE`) define: named
/// `default`, every type, no MRN; and the origin its errors name. A list
/// of tables is awkward in the environment, and one app is the usual case.
/// `var` reads an environment variable.
fn outbound_shortcut(
    figment: Figment,
    var: impl Fn(&str) -> Option<String>,
) -> Result<(Figment, Option<String>), ConfigError> {
    let url_variable = format!("{ENV_PREFIX}OUTBOUND_URL");
    let secret_variable = format!("{ENV_PREFIX}OUTBOUND_SECRET");
    let file_variable = format!("{secret_variable}_FILE");
    let given = |name: &str| var(name).filter(|value| !value.is_empty());
    let url = given(&url_variable);
    let secret = match given(&file_variable) {
        // As for the keys of FILE_KEYS, the file wins over the variable.
        Some(path) => {
            let contents = read_secret_file(&file_variable, Path::new(&path))?;
            Some((contents.trim().to_owned(), &file_variable))
        }
        None => given(&secret_variable).map(|secret| (secret, &secret_variable)),
    };
    let error = |origin: String, message: String| ConfigError::Key {
        key: "outbound_webhooks".into(),
        origin,
        message,
    };
    match (url, secret) {
        (None, None) => Ok((figment, None)),
        (Some(_), None) => Err(error(
            format!(" (from {url_variable})"),
            format!("{url_variable} needs {secret_variable} (or {file_variable}) too"),
        )),
        (None, Some((_, from))) => Err(error(
            format!(" (from {from})"),
            format!("{from} needs {url_variable} too"),
        )),
        (Some(url), Some((secret, from))) => {
            let origin = format!(" (from {url_variable} and {from})");
            if figment.find_value("outbound_webhooks").is_ok() {
                return Err(error(
                    origin,
                    "is set as well: give the endpoints as [[outbound_webhooks]] or as these variables, not both".into(),
                ));
            }
            let endpoint = BTreeMap::from([
                ("name", "default".to_owned()),
                ("url", url),
                ("secret", secret),
            ]);
            Ok((
                figment.merge(("outbound_webhooks", vec![endpoint])),
                Some(origin),
            ))
        }
    }
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

    /// A valid secret of an outgoing webhook endpoint.
    const OUTBOUND_SECRET: &str = "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTMy";

    /// The configuration of `toml` with the shortcut's variables `vars`, as
    /// `load` reads them.
    fn with_shortcut(toml: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: BTreeMap<String, String> = vars
            .iter()
            .map(|(name, value)| (format!("{ENV_PREFIX}{name}"), (*value).to_owned()))
            .collect();
        let figment = Figment::new().merge(Toml::string(toml));
        let (figment, origin) = outbound_shortcut(figment, |name| vars.get(name).cloned())?;
        let given = origin.map(|origin| ("outbound_webhooks", origin));
        finish(&figment, None, given.into_iter().collect())
    }

    #[test]
    fn the_outbound_variables_define_one_endpoint_named_default() {
        let config = with_shortcut(
            "",
            &[
                ("OUTBOUND_URL", "https://app.clinic.example/hooks"),
                ("OUTBOUND_SECRET", OUTBOUND_SECRET),
            ],
        )
        .unwrap();
        let [endpoint] = &config.outbound_endpoints[..] else {
            panic!("{:?}", config.outbound_endpoints);
        };
        assert_eq!(endpoint.name, "default");
        assert_eq!(endpoint.url.as_str(), "https://app.clinic.example/hooks");
        assert_eq!(endpoint.types, crate::domain::ChangeKind::ALL);
        assert!(!endpoint.phi);
        assert!(with_shortcut("", &[("OUTBOUND_URL", ""), ("OUTBOUND_SECRET", "")]).is_ok());
    }

    #[test]
    fn the_outbound_secret_may_come_from_a_file_which_wins() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("outbound-secret");
        std::fs::write(&path, format!("{OUTBOUND_SECRET}\n")).unwrap();
        let path = path.to_str().unwrap();
        let config = with_shortcut(
            "",
            &[
                ("OUTBOUND_URL", "http://10.0.0.5:9000/hooks"),
                ("OUTBOUND_SECRET", "whsec_not-base64-and-ignored"),
                ("OUTBOUND_SECRET_FILE", path),
            ],
        )
        .unwrap();
        assert_eq!(
            config.outbound_endpoints[0].key,
            crate::outbound::signing::SigningKey::parse(OUTBOUND_SECRET).unwrap()
        );
        let error = with_shortcut(
            "",
            &[
                ("OUTBOUND_URL", "http://10.0.0.5:9000/hooks"),
                ("OUTBOUND_SECRET_FILE", "/no/such/file"),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.starts_with("COBALT_RECEIVER_OUTBOUND_SECRET_FILE names /no/such/file"),
            "{error}"
        );
    }

    #[test]
    fn the_outbound_variables_come_together_and_never_beside_the_list() {
        let error = with_shortcut("", &[("OUTBOUND_URL", "https://a.example/h")])
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "configuration key `outbound_webhooks` (from COBALT_RECEIVER_OUTBOUND_URL): \
             COBALT_RECEIVER_OUTBOUND_URL needs COBALT_RECEIVER_OUTBOUND_SECRET \
             (or COBALT_RECEIVER_OUTBOUND_SECRET_FILE) too"
        );
        let error = with_shortcut("", &[("OUTBOUND_SECRET", OUTBOUND_SECRET)])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("needs COBALT_RECEIVER_OUTBOUND_URL too"),
            "{error}"
        );
        assert!(!error.contains(OUTBOUND_SECRET), "{error}");
        let file = format!(
            "[[outbound_webhooks]]\nname = \"app\"\nurl = \"https://a.example/h\"\nsecret = \"{OUTBOUND_SECRET}\""
        );
        assert!(with_shortcut(&file, &[]).is_ok());
        let error = with_shortcut(
            &file,
            &[
                ("OUTBOUND_URL", "https://b.example/h"),
                ("OUTBOUND_SECRET", OUTBOUND_SECRET),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("`outbound_webhooks`"), "{error}");
        assert!(error.contains("not both"), "{error}");
        assert!(!error.contains(OUTBOUND_SECRET), "{error}");
    }

    #[test]
    fn a_bad_outbound_variable_is_named_without_its_value() {
        let secret = "whsec_dG9vLXNob3J0LWtleQ==";
        let error = with_shortcut(
            "",
            &[
                ("OUTBOUND_URL", "https://app.example/h"),
                ("OUTBOUND_SECRET", secret),
            ],
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            error,
            "configuration key `outbound_webhooks[0].secret` (from COBALT_RECEIVER_OUTBOUND_URL \
             and COBALT_RECEIVER_OUTBOUND_SECRET): endpoint `default`: decodes to 13 bytes; \
             it must be 24 to 64"
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
