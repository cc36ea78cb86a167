//! Outgoing webhooks' endpoints (`[[outbound_webhooks]]`): each table as
//! written ([`OutboundWebhook`], what check-config prints), and as the
//! sender uses it once its rules pass ([`OutboundEndpoint`]).
//!
//! Every field has a default here, so a missing one is reported by these
//! rules, naming the endpoint by its position and name, rather than by
//! serde's wording. No printed form shows a secret or a URL's password.

use std::collections::BTreeMap;
use std::fmt;

use reqwest::Url;
use serde::{Deserialize, Serialize, Serializer};

use super::ConfigError;
use crate::domain::ChangeKind;
use crate::outbound::signing::SigningKey;
use crate::secret::{self, Secret};

/// Most endpoints: each gets every change, so each multiplies the work.
pub const MAX_ENDPOINTS: usize = 16;
const MAX_NAME_CHARS: usize = 40;
/// Longer URLs are refused by some servers and proxies.
const MAX_URL_BYTES: usize = 2048;

/// One `[[outbound_webhooks]]` table, as written.
#[derive(Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboundWebhook {
    /// Names the endpoint in logs, metrics and the console: 1 to 40 of
    /// `a-z 0-9 _ -`, unique.
    pub name: String,
    /// Where messages are posted: http or https, at most 2048 bytes.
    #[serde(serialize_with = "url_without_password")]
    pub url: String,
    /// `whsec_` and the standard base64 of 24 to 64 random bytes.
    pub secret: Secret,
    /// Webhook types sent (`job.registered`, `job.created`, `job.failed`,
    /// `job.overdue`); all by default.
    pub types: Vec<String>,
    /// Whether messages carry the patient's MRN.
    pub phi: bool,
}

impl Default for OutboundWebhook {
    fn default() -> Self {
        Self {
            name: String::new(),
            url: String::new(),
            secret: Secret::new(""),
            types: ChangeKind::ALL
                .iter()
                .map(|kind| kind.webhook_type().to_owned())
                .collect(),
            phi: false,
        }
    }
}

impl fmt::Debug for OutboundWebhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboundWebhook")
            .field("name", &self.name)
            .field("url", &secret::redact_url(&self.url))
            .field("secret", &self.secret)
            .field("types", &self.types)
            .field("phi", &self.phi)
            .finish()
    }
}

/// An endpoint whose rules passed, as the sender uses it.
#[derive(Clone)]
pub struct OutboundEndpoint {
    pub name: String,
    pub url: Url,
    pub key: SigningKey,
    /// The kinds of change sent, in the order configured.
    pub types: Vec<ChangeKind>,
    /// Whether messages carry the patient's MRN.
    pub phi: bool,
}

impl OutboundEndpoint {
    /// Whether a change of this kind is sent here.
    pub fn wants(&self, kind: ChangeKind) -> bool {
        self.types.contains(&kind)
    }

    /// The URL as it may be printed (logs, the console): a password in
    /// it shown as `[redacted]`.
    pub fn url_for_display(&self) -> String {
        secret::redact_url(self.url.as_str())
    }
}

impl fmt::Debug for OutboundEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboundEndpoint")
            .field("name", &self.name)
            .field("url", &self.url_for_display())
            .field("key", &self.key)
            .field("types", &self.types)
            .field("phi", &self.phi)
            .finish()
    }
}

/// Checks every endpoint's rules; the endpoints as the sender uses them.
pub(super) fn parse(webhooks: &[OutboundWebhook]) -> Result<Vec<OutboundEndpoint>, ConfigError> {
    if webhooks.len() > MAX_ENDPOINTS {
        return Err(ConfigError::key(
            "outbound_webhooks",
            &format!(
                "lists {} endpoints; at most {MAX_ENDPOINTS} are allowed",
                webhooks.len()
            ),
        ));
    }
    let mut names = BTreeMap::new();
    let mut endpoints = Vec::with_capacity(webhooks.len());
    for (index, webhook) in webhooks.iter().enumerate() {
        let endpoint = parse_one(webhook)
            .map_err(|(field, message)| field_error(index, webhook, field, &message))?;
        if let Some(first) = names.insert(endpoint.name.clone(), index) {
            return Err(field_error(
                index,
                webhook,
                "name",
                &format!("repeats the name of outbound_webhooks[{first}]; names must be unique"),
            ));
        }
        endpoints.push(endpoint);
    }
    Ok(endpoints)
}

/// An error naming the endpoint's field by position (`outbound_webhooks[2].url`),
/// and by name when that is valid.
fn field_error(index: usize, webhook: &OutboundWebhook, field: &str, message: &str) -> ConfigError {
    let key = format!("outbound_webhooks[{index}].{field}");
    if field != "name" && valid_name(&webhook.name) {
        ConfigError::key(&key, &format!("endpoint `{}`: {message}", webhook.name))
    } else {
        ConfigError::key(&key, message)
    }
}

fn parse_one(webhook: &OutboundWebhook) -> Result<OutboundEndpoint, (&'static str, String)> {
    if !valid_name(&webhook.name) {
        return Err((
            "name",
            format!(
                "must be 1 to {MAX_NAME_CHARS} characters, each a-z, 0-9, _ or -{}",
                if webhook.name.is_empty() {
                    " (it is required)"
                } else {
                    ""
                }
            ),
        ));
    }
    let url = parse_url(&webhook.url).map_err(|message| ("url", message))?;
    let key = if webhook.secret.expose().is_empty() {
        return Err((
            "secret",
            "is required: whsec_ and the base64 of 24 to 64 random bytes".into(),
        ));
    } else {
        SigningKey::parse(webhook.secret.expose()).map_err(|e| ("secret", e.to_string()))?
    };
    let types = parse_types(&webhook.types).map_err(|message| ("types", message))?;
    Ok(OutboundEndpoint {
        name: webhook.name.clone(),
        url,
        key,
        types,
        phi: webhook.phi,
    })
}

fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_CHARS).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The URL, if it is one messages can go to. Messages never quote it: it
/// may hold a password.
fn parse_url(text: &str) -> Result<Url, String> {
    if text.is_empty() {
        return Err("is required: the http or https URL messages are posted to".into());
    }
    if text.len() > MAX_URL_BYTES {
        return Err(format!("must be at most {MAX_URL_BYTES} bytes"));
    }
    let url = Url::parse(text).map_err(|e| format!("is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http or https URL".into());
    }
    Ok(url)
}

fn parse_types(names: &[String]) -> Result<Vec<ChangeKind>, String> {
    if names.is_empty() {
        return Err("must name at least one type (leave it out for all of them)".into());
    }
    let mut kinds = Vec::with_capacity(names.len());
    for (position, name) in names.iter().enumerate() {
        // The unknown value is not repeated: errors never quote values.
        let kind = ChangeKind::from_webhook_type(name).ok_or_else(|| {
            format!(
                "entry {position} is not a type; the types are {}",
                ChangeKind::ALL.map(ChangeKind::webhook_type).join(", ")
            )
        })?;
        if kinds.contains(&kind) {
            return Err(format!("names {} twice", kind.webhook_type()));
        }
        kinds.push(kind);
    }
    Ok(kinds)
}

/// A URL as check-config prints it: a password in it shown as `[redacted]`.
fn url_without_password<S: Serializer>(url: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&secret::redact_url(url))
}
