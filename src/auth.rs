//! API tokens: who may call the API, and what each may do.
//!
//! An `api_tokens` entry is either a bare token (read access, as before
//! tokens had names) or `NAME:PERMISSIONS:TOKEN`, PERMISSIONS being
//! `read`, `submit`, `operate` and `phi` joined by `+`. TOKEN may be given
//! as `sha256:<hex digest>` instead of the token itself.
//!
//! Tokens are kept only as SHA-256 digests; a presented token is hashed and
//! compared with every configured digest in constant time, so neither the
//! length nor the content of a token shows in response times. Logs name
//! the token (its name), never its value.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use crate::config::{Config, ConfigError};
use crate::secret::Secret;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// The status API and metrics.
    Read,
    /// Register jobs and submit notes.
    Submit,
    /// Start a recovery sweep, read the audit trail.
    Operate,
    /// See patient data: whole MRNs, in answers and in the console.
    Phi,
}

impl Permission {
    pub const ALL: [Self; 4] = [Self::Read, Self::Submit, Self::Operate, Self::Phi];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Submit => "submit",
            Self::Operate => "operate",
            Self::Phi => "phi",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// The caller of a request, once its token is checked.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: Arc<str>,
    permissions: u8,
}

impl Caller {
    pub fn may(&self, permission: Permission) -> bool {
        self.permissions & permission.bit() != 0
    }

    /// The permissions, as `read+submit`.
    pub fn permissions(&self) -> String {
        describe(self.permissions)
    }
}

fn describe(permissions: u8) -> String {
    let names: Vec<_> = Permission::ALL
        .into_iter()
        .filter(|p| permissions & p.bit() != 0)
        .map(Permission::as_str)
        .collect();
    names.join("+")
}

/// An `api_tokens` entry that gives the token's SHA-256 digest, not the token.
pub const HASHED_TOKEN_PREFIX: &str = "sha256:";

/// Tokens that are shorter than this are named at start as weak.
pub const STRONG_TOKEN_CHARS: usize = 32;

/// The tokens of this project's examples, which anyone can read.
const EXAMPLE_TOKENS: [&str; 3] = [
    "example-token-change-me",
    "example-submit-token-change-me",
    "example-operator-token-change-me",
];

struct ApiToken {
    name: Arc<str>,
    permissions: u8,
    digest: [u8; 32],
    /// Why the token is easy to guess, if it is.
    weakness: Option<&'static str>,
}

#[derive(Clone)]
pub struct ApiTokens {
    tokens: Arc<[ApiToken]>,
}

impl ApiTokens {
    /// Reads the `api_tokens` entries; [`check_tokens`] has checked them
    /// when the configuration was loaded, so none is refused here.
    pub fn new(entries: &[Secret]) -> Self {
        let tokens = entries
            .iter()
            .enumerate()
            .filter_map(|(index, entry)| parse_entry(entry.expose(), index).ok())
            .collect();
        Self { tokens }
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The names of the configured tokens, for the start-up line.
    pub fn names(&self) -> Vec<String> {
        self.tokens.iter().map(|t| t.name.to_string()).collect()
    }

    /// Each token's name and permissions (`read+submit`), never its value.
    pub fn described(&self) -> Vec<(String, String)> {
        self.tokens
            .iter()
            .map(|t| (t.name.to_string(), describe(t.permissions)))
            .collect()
    }

    /// The tokens that are easy to guess, by name, with why.
    pub fn weak(&self) -> Vec<(String, &'static str)> {
        self.tokens
            .iter()
            .filter_map(|t| Some((t.name.to_string(), t.weakness?)))
            .collect()
    }

    /// The caller a token's name stands for (a console session's), while
    /// that token is configured.
    pub fn caller_named(&self, name: &str) -> Option<Caller> {
        let token = self.tokens.iter().find(|t| &*t.name == name)?;
        Some(Caller {
            name: token.name.clone(),
            permissions: token.permissions,
        })
    }

    /// The caller an `Authorization` header value names, if its token is
    /// configured.
    pub fn caller(&self, authorization: Option<&[u8]>) -> Option<Caller> {
        self.caller_of(authorization.and_then(bearer_token)?)
    }

    /// The caller a token names (the console's sign-in form), if it is
    /// configured.
    pub fn caller_of(&self, token: &str) -> Option<Caller> {
        let presented = digest(token);
        // Every digest is compared, whichever matches.
        let mut found = 0u32;
        for (index, known) in self.tokens.iter().enumerate() {
            let position = u32::try_from(index + 1).unwrap_or(u32::MAX);
            found.conditional_assign(&position, known.digest.ct_eq(&presented));
        }
        let token = self
            .tokens
            .get(usize::try_from(found).ok()?.checked_sub(1)?)?;
        Some(Caller {
            name: token.name.clone(),
            permissions: token.permissions,
        })
    }
}

/// Checks the configuration's `api_tokens`: the first entry that cannot
/// be used is named by its key and explained, never repeated.
pub fn check_tokens(config: &Config) -> Result<(), ConfigError> {
    for token in &config.api_tokens {
        check_entry(token.expose()).map_err(|reason| ConfigError::key("api_tokens", &reason))?;
    }
    Ok(())
}

/// Why an `api_tokens` entry cannot be used, in words that never repeat it.
pub fn check_entry(entry: &str) -> Result<(), String> {
    parse_entry(entry, 0).map(drop)
}

fn parse_entry(entry: &str, index: usize) -> Result<ApiToken, String> {
    let named = entry
        .split_once(':')
        .and_then(|(name, rest)| Some((name, rest.split_once(':')?)))
        .filter(|(name, _)| *name != HASHED_TOKEN_PREFIX.trim_end_matches(':'));
    let (name, permissions, token) = match named {
        Some((name, (permissions, token))) => {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                return Err(
                    "a token's name may hold only letters, digits, `-`, `_` and `.`".into(),
                );
            }
            (name.to_owned(), parse_permissions(permissions)?, token)
        }
        // A bare token keeps the meaning it had: read access.
        None => (
            format!("token-{}", index + 1),
            Permission::Read.bit(),
            entry,
        ),
    };
    if token.is_empty() {
        return Err("a token is empty".into());
    }
    let (digest, length) = match token.strip_prefix(HASHED_TOKEN_PREFIX) {
        Some(hex_digest) => {
            let mut digest = [0u8; 32];
            hex::decode_to_slice(hex_digest, &mut digest).map_err(|_| {
                "a sha256: token must be followed by 64 hexadecimal characters".to_owned()
            })?;
            (digest, None)
        }
        None => (self::digest(token), Some(token.chars().count())),
    };
    let weakness = if EXAMPLE_TOKENS.iter().any(|t| self::digest(t) == digest) {
        Some("it is an example token, published with this project")
    } else if length.is_some_and(|n| n < STRONG_TOKEN_CHARS) {
        Some("it is shorter than 32 characters")
    } else {
        None
    };
    Ok(ApiToken {
        name: name.into(),
        permissions,
        digest,
        weakness,
    })
}

fn parse_permissions(text: &str) -> Result<u8, String> {
    text.split('+').try_fold(0u8, |bits, word| {
        Permission::ALL
            .into_iter()
            .find(|p| p.as_str() == word)
            .map(|p| bits | p.bit())
            .ok_or_else(|| {
                "permissions must be read, submit, operate or phi, joined by `+` (as in NAME:read+submit:TOKEN)"
                    .to_owned()
            })
    })
}

/// The token of `Bearer <token>`; the scheme is case-insensitive (RFC 9110).
fn bearer_token(header: &[u8]) -> Option<&str> {
    let header = std::str::from_utf8(header).ok()?;
    let (scheme, token) = header.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(entries: &[&str]) -> ApiTokens {
        for entry in entries {
            check_entry(entry).unwrap();
        }
        ApiTokens::new(&entries.iter().map(|e| Secret::new(*e)).collect::<Vec<_>>())
    }

    fn name_of(tokens: &ApiTokens, header: &[u8]) -> Option<String> {
        tokens.caller(Some(header)).map(|c| c.name.to_string())
    }

    #[test]
    fn only_a_configured_bearer_token_is_allowed() {
        let tokens = tokens(&["tok_a", "tok_b"]);
        assert_eq!(
            name_of(&tokens, b"Bearer tok_a").as_deref(),
            Some("token-1")
        );
        assert_eq!(
            name_of(&tokens, b"bearer tok_b").as_deref(),
            Some("token-2")
        );
        for refused in [
            &b"Bearer tok_c"[..],
            b"Bearer ",
            b"tok_a",
            b"Basic tok_a",
            b"Bearer tok_a2",
            b"",
        ] {
            assert!(
                tokens.caller(Some(refused)).is_none(),
                "{}",
                String::from_utf8_lossy(refused)
            );
        }
        assert!(tokens.caller(None).is_none());
        assert!(
            ApiTokens::new(&[])
                .caller(Some(b"Bearer anything"))
                .is_none()
        );
    }

    #[test]
    fn a_bare_token_may_only_read() {
        let caller = tokens(&["tok_a"]).caller(Some(b"Bearer tok_a")).unwrap();
        assert!(caller.may(Permission::Read));
        assert!(!caller.may(Permission::Submit));
        assert!(!caller.may(Permission::Operate));
    }

    #[test]
    fn named_tokens_carry_their_permissions() {
        let hashed = format!(
            "ops:read+submit+operate:sha256:{}",
            hex::encode(digest("tok_ops"))
        );
        let tokens = tokens(&["clinic-app:read+submit:tok_app", &hashed, "bare"]);
        let app = tokens.caller(Some(b"Bearer tok_app")).unwrap();
        assert_eq!(&*app.name, "clinic-app");
        assert!(app.may(Permission::Submit) && !app.may(Permission::Operate));
        let ops = tokens.caller(Some(b"Bearer tok_ops")).unwrap();
        assert_eq!(&*ops.name, "ops");
        assert!(ops.may(Permission::Operate) && ops.may(Permission::Read));
        // The entry itself is not a token.
        assert!(
            tokens
                .caller(Some(b"Bearer clinic-app:read+submit:tok_app"))
                .is_none()
        );
    }

    #[test]
    fn every_token_of_the_example_configuration_is_named_as_an_example() {
        let config = crate::config::from_toml(include_str!("../config.example.toml")).unwrap();
        let tokens = ApiTokens::new(&config.api_tokens);
        let weak = tokens.weak();
        assert_eq!(weak.len(), config.api_tokens.len(), "{weak:?}");
        assert!(
            weak.iter().all(|(_, why)| why.contains("example")),
            "{weak:?}"
        );
        // One of them may operate, so the console's Audit page and recovery
        // can be tried with the example file.
        assert!(
            tokens
                .described()
                .iter()
                .any(|(_, permissions)| permissions.contains("operate"))
        );
    }

    #[test]
    fn weak_tokens_are_named_by_name_and_described_without_their_value() {
        let example = format!(
            "ex:read:sha256:{}",
            hex::encode(digest("example-submit-token-change-me"))
        );
        let strong = "ops:read+operate+phi:tok_0123456789abcdef0123456789abcdef";
        let tokens = tokens(&[
            "short:read:tok_short",
            &example,
            strong,
            "example-token-change-me",
        ]);
        let weak = tokens.weak();
        let names: Vec<_> = weak.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["short", "ex", "token-4"]);
        assert!(weak[0].1.contains("32"), "{:?}", weak[0]);
        assert!(weak[1].1.contains("example"), "{:?}", weak[1]);
        assert_eq!(
            tokens.described()[2],
            ("ops".to_owned(), "read+operate+phi".to_owned())
        );
        assert_eq!(
            tokens.caller_named("ops").unwrap().permissions(),
            "read+operate+phi"
        );
        assert!(tokens.caller_named("nobody").is_none());
    }

    #[test]
    fn a_hashed_token_allows_the_token_it_was_made_from() {
        let hashed = format!("sha256:{}", hex::encode(digest("tok_plain")));
        let tokens = tokens(&[&hashed]);
        assert!(tokens.caller(Some(b"Bearer tok_plain")).is_some());
        assert!(
            tokens
                .caller(Some(format!("Bearer {hashed}").as_bytes()))
                .is_none()
        );
    }

    #[test]
    fn bad_entries_are_explained_without_their_value() {
        for (entry, reason) in [
            ("app:write:tok_secret_1", "permissions must be"),
            ("app:read:", "empty"),
            ("a pp:read:tok_secret_2", "name may hold"),
            ("sha256:abc", "64 hexadecimal"),
            ("app:read:sha256:xyz", "64 hexadecimal"),
        ] {
            let error = check_entry(entry).unwrap_err();
            assert!(error.contains(reason), "{entry}: {error}");
            assert!(!error.contains("tok_secret"), "{error}");
        }
    }

    #[test]
    fn a_token_may_be_given_as_its_sha256_digest() {
        let config = |entry: &str| Config {
            api_tokens: vec![Secret::new(entry)],
            ..Config::default()
        };
        let digest = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
        assert!(check_tokens(&config(digest)).is_ok());
        for bad in [
            "sha256:abc",
            "sha256:zz00000000000000000000000000000000000000000000000000000000000000",
        ] {
            let error = check_tokens(&config(bad)).unwrap_err().to_string();
            assert!(error.contains("`api_tokens`"), "{error}");
            assert!(!error.contains(bad), "{error}");
        }
    }

    #[test]
    fn the_example_file_s_tokens_are_usable() {
        let config = crate::config::from_toml(include_str!("../config.example.toml")).unwrap();
        assert!(!config.api_tokens.is_empty());
        check_tokens(&config).unwrap();
    }
}
