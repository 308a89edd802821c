//! Bearer tokens with roles, for the HTTP surfaces we ship (the review
//! page of `crm-sync serve`, and the services built on it).
//!
//! A token belongs to a named person or program and carries one
//! [`Role`]: `viewer` reads, `operator` also acts (resolves reviews,
//! retries dead letters), `admin` also manages connections and
//! credentials. Tokens are kept only as SHA-256 digests: the table never
//! holds, prints or returns a token, and a look-up compares digests, so its
//! timing says nothing about the token.
//!
//! ```
//! use crm_sync::access::{Role, Tokens};
//! use secrecy::SecretString;
//!
//! let mut tokens = Tokens::new();
//! tokens.add("alice", Role::Operator, &SecretString::from("s3cret-token"));
//! let who = tokens.check("s3cret-token").expect("known token");
//! assert_eq!(who.name, "alice");
//! assert!(who.role.allows(Role::Viewer));
//! assert!(!who.role.allows(Role::Admin));
//! assert!(tokens.check("other").is_none());
//! ```

use std::collections::HashMap;
use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a token may do; each role includes the ones below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads queues, records and reports.
    Viewer,
    /// Also acts: resolves reviews, retries and discards dead letters,
    /// runs syncs.
    Operator,
    /// Also manages connections and credentials.
    Admin,
}

impl Role {
    /// Whether this role includes `needed`.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who made a request: the token's owner and role.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Principal {
    /// The token's owner; audit entries name it as the actor.
    pub name: String,
    /// What the token may do.
    pub role: Role,
}

impl Principal {
    /// `name` with `role`.
    pub fn new(name: impl Into<String>, role: Role) -> Self {
        Principal {
            name: name.into(),
            role,
        }
    }
}

/// The digest tokens are looked up by.
pub(crate) fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The accepted tokens, as digests.
#[derive(Clone, Default)]
pub struct Tokens {
    by_digest: HashMap<[u8; 32], Principal>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<String> = self
            .by_digest
            .values()
            .map(|p| format!("{}:{}", p.name, p.role))
            .collect();
        names.sort();
        f.debug_struct("Tokens").field("holders", &names).finish()
    }
}

impl Tokens {
    /// No token accepted.
    pub fn new() -> Self {
        Tokens::default()
    }

    /// Accepts `token` for `name` with `role` (a second `add` of the same
    /// token replaces the first).
    pub fn add(&mut self, name: impl Into<String>, role: Role, token: &SecretString) {
        self.by_digest
            .insert(digest(token.expose_secret()), Principal::new(name, role));
    }

    /// The token's holder, or `None` for an unknown token.
    pub fn check(&self, token: &str) -> Option<&Principal> {
        if token.is_empty() {
            return None;
        }
        self.by_digest.get(&digest(token))
    }

    /// The holder of the `Authorization: Bearer` token of a request.
    pub fn check_bearer(&self, authorization: Option<&str>) -> Option<&Principal> {
        let value = authorization?.trim();
        let (scheme, token) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        self.check(token.trim())
    }

    /// How many tokens are accepted.
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// Whether no token is accepted.
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

/// One token of a config file (`review.tokens`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TokenConfig {
    /// The holder, named in audit entries.
    pub name: String,
    /// What the token may do.
    pub role: Role,
    /// The token; `${NAME}` takes it from the environment.
    pub token: SecretString,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_include_the_ones_below() {
        assert!(Role::Admin.allows(Role::Operator));
        assert!(Role::Operator.allows(Role::Viewer));
        assert!(!Role::Viewer.allows(Role::Operator));
    }

    #[test]
    fn bearer_header_is_parsed_and_debug_hides_tokens() {
        let mut t = Tokens::new();
        t.add("bot", Role::Viewer, &SecretString::from("tok-123"));
        assert_eq!(
            t.check_bearer(Some("Bearer tok-123"))
                .map(|p| p.name.as_str()),
            Some("bot")
        );
        assert_eq!(
            t.check_bearer(Some("bearer  tok-123")).map(|p| p.role),
            Some(Role::Viewer)
        );
        assert!(t.check_bearer(Some("Basic tok-123")).is_none());
        assert!(t.check_bearer(None).is_none());
        assert!(t.check("").is_none());
        let debug = format!("{t:?}");
        assert!(!debug.contains("tok-123"), "{debug}");
        assert!(debug.contains("bot:viewer"), "{debug}");
    }
}
