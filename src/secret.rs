//! Secrets: webhook secrets, API tokens, Cobalt's credentials and database
//! passwords, held so that no printed form (`Debug`, check-config's TOML,
//! a log line) ever shows them.
//!
//! A [`Secret`] prints as `[redacted]`; [`redact_url`] hides the password
//! of a database URL; [`deserialize_list`] reads a list of secrets given
//! as a TOML array or as one comma-separated string.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A secret string: webhook secrets and API tokens. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Printed configurations (check-config) show that a secret is set, never
/// what it is.
impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SecretVisitor;

        impl serde::de::Visitor<'_> for SecretVisitor {
            type Value = Secret;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Secret, E> {
                Ok(Secret::new(value))
            }

            // figment reads an all-digit environment value as a number.
            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Secret, E> {
                Ok(Secret::new(value.to_string()))
            }

            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Secret, E> {
                Ok(Secret::new(value.to_string()))
            }
        }

        deserializer.deserialize_any(SecretVisitor)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// A list given as a TOML array or, from the environment, as one
/// comma-separated string (figment reads a lone number as a number).
pub fn deserialize_list<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<Secret>, D::Error> {
    struct ListVisitor;

    impl<'de> serde::de::Visitor<'de> for ListVisitor {
        type Value = Vec<Secret>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of strings or one comma-separated string")
        }

        fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Self::Value, E> {
            Ok(value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(Secret::new)
                .collect())
        }

        fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Self::Value, E> {
            Ok(vec![Secret::new(value.to_string())])
        }

        fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Self::Value, E> {
            Ok(vec![Secret::new(value.to_string())])
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut secrets = Vec::new();
            while let Some(item) = seq.next_element::<String>()? {
                secrets.push(Secret::new(item));
            }
            Ok(secrets)
        }
    }

    deserializer.deserialize_any(ListVisitor)
}

/// A database URL as it may be printed: the password, in the user part or
/// in a `password=` parameter, shown as `[redacted]`.
pub fn redact_url(url: &str) -> String {
    let mut url = url.to_owned();
    if let Some(scheme_end) = url.find("://").map(|n| n + 3) {
        let authority_end = url[scheme_end..]
            .find(['/', '?'])
            .map_or(url.len(), |n| scheme_end + n);
        if let Some(at) = url[scheme_end..authority_end].rfind('@') {
            let user_info = scheme_end..scheme_end + at;
            if let Some(colon) = url[user_info.clone()].find(':') {
                url.replace_range(scheme_end + colon + 1..user_info.end, "[redacted]");
            }
        }
    }
    if let Some(query_start) = url.find('?') {
        let query: Vec<String> = url[query_start + 1..]
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                    format!("{key}=[redacted]")
                }
                _ => pair.to_owned(),
            })
            .collect();
        url.replace_range(query_start + 1.., &query.join("&"));
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_prints_as_redacted() {
        let secret = Secret::new("whsec_hidden");
        assert_eq!(format!("{secret:?}"), "Secret([redacted])");
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"[redacted]\"");
    }

    #[test]
    fn printed_database_urls_hide_passwords() {
        for (url, shown) in [
            ("sqlite://data/receiver.db", "sqlite://data/receiver.db"),
            (
                "postgres://app@db:5432/cobalt",
                "postgres://app@db:5432/cobalt",
            ),
            (
                "postgres://app:s3cr%40t@db:5432/cobalt?sslmode=require",
                "postgres://app:[redacted]@db:5432/cobalt?sslmode=require",
            ),
            (
                "postgresql://db/cobalt?user=app&password=s3cret&sslmode=verify-full",
                "postgresql://db/cobalt?user=app&password=[redacted]&sslmode=verify-full",
            ),
        ] {
            assert_eq!(redact_url(url), shown);
        }
    }
}
