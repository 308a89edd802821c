//! Google credentials: OAuth 2.0 user credentials (refresh token) and
//! service-account JSON keys (JWT bearer grant).
//!
//! [`GoogleCredentials::from_json`] reads the JSON files Google tools write:
//! `{"type": "authorized_user", "client_id", "client_secret",
//! "refresh_token"}` (from an OAuth consent, e.g. `gcloud auth
//! application-default login`) and `{"type": "service_account", ...}` (a key
//! downloaded from the Cloud console). Both exchange at Google's token
//! endpoint, `https://oauth2.googleapis.com/token`, for an access token that
//! lasts about an hour; `crm-http` refreshes it ahead of expiry and once on a
//! 401, so long reads outlive tokens.
//!
//! `Debug` never prints a secret.

use std::fmt;
use std::path::Path;

use crm_core::{Error, Result};
use crm_http::secrecy::SecretString;
use crm_http::{Auth, JwtBearerFlow, RefreshTokenFlow, ServiceAccountKey};
use serde::Deserialize;
use url::Url;

/// Google's OAuth 2.0 token endpoint.
pub const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// Credentials for the Sheets API.
#[derive(Clone)]
#[non_exhaustive]
pub enum GoogleCredentials {
    /// OAuth 2.0 user credentials: refreshed with the refresh-token grant.
    AuthorizedUser {
        /// The OAuth client id.
        client_id: String,
        /// The OAuth client secret.
        client_secret: SecretString,
        /// The user's refresh token.
        refresh_token: SecretString,
        /// The token endpoint.
        token_uri: String,
    },
    /// A service-account key: the JWT bearer grant (RFC 7523).
    ServiceAccount(ServiceAccountKey),
    /// A ready access token (no refresh), e.g. from another tool.
    AccessToken(SecretString),
}

impl fmt::Debug for GoogleCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GoogleCredentials::AuthorizedUser {
                client_id,
                token_uri,
                ..
            } => f
                .debug_struct("AuthorizedUser")
                .field("client_id", client_id)
                .field("client_secret", &"[redacted]")
                .field("refresh_token", &"[redacted]")
                .field("token_uri", token_uri)
                .finish(),
            GoogleCredentials::ServiceAccount(key) => f
                .debug_struct("ServiceAccount")
                .field("client_email", &key.client_email)
                .field("token_uri", &key.token_uri)
                .finish_non_exhaustive(),
            GoogleCredentials::AccessToken(_) => f.write_str("AccessToken([redacted])"),
        }
    }
}

#[derive(Deserialize)]
struct TypeOnly {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct AuthorizedUserJson {
    client_id: String,
    client_secret: String,
    refresh_token: String,
    #[serde(default)]
    token_uri: Option<String>,
}

impl GoogleCredentials {
    /// OAuth user credentials.
    pub fn authorized_user(
        client_id: impl Into<String>,
        client_secret: SecretString,
        refresh_token: SecretString,
    ) -> Self {
        GoogleCredentials::AuthorizedUser {
            client_id: client_id.into(),
            client_secret,
            refresh_token,
            token_uri: GOOGLE_TOKEN_URI.to_owned(),
        }
    }

    /// Parses a credentials JSON file's contents by its `type`
    /// (`authorized_user` or `service_account`).
    ///
    /// # Errors
    /// [`crm_core::ErrorKind::InvalidInput`] for malformed JSON, a missing
    /// field or another `type`. The message never quotes the file.
    pub fn from_json(json: &str) -> Result<Self> {
        let kind: TypeOnly = serde_json::from_str(json).map_err(|e| {
            Error::invalid_input(format!(
                "Google credentials are not valid JSON with a `type` (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        match kind.kind.as_str() {
            "authorized_user" => {
                let u: AuthorizedUserJson = serde_json::from_str(json).map_err(|e| {
                    Error::invalid_input(format!(
                        "authorized_user credentials: {:?} error at line {}, column {}",
                        e.classify(),
                        e.line(),
                        e.column()
                    ))
                })?;
                Ok(GoogleCredentials::AuthorizedUser {
                    client_id: u.client_id,
                    client_secret: SecretString::from(u.client_secret),
                    refresh_token: SecretString::from(u.refresh_token),
                    token_uri: u.token_uri.unwrap_or_else(|| GOOGLE_TOKEN_URI.to_owned()),
                })
            }
            "service_account" => Ok(GoogleCredentials::ServiceAccount(
                ServiceAccountKey::from_json(json)?,
            )),
            other => Err(Error::invalid_input(format!(
                "Google credentials of type {other:?} are not supported (authorized_user, service_account)"
            ))),
        }
    }

    /// Reads a credentials JSON file.
    ///
    /// # Errors
    /// As [`GoogleCredentials::from_json`], or when the file cannot be read.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let text = std::fs::read_to_string(path.as_ref()).map_err(|e| {
            Error::invalid_input(format!(
                "cannot read Google credentials {}",
                path.as_ref().display()
            ))
            .with_source(e)
        })?;
        Self::from_json(&text)
    }

    /// Replaces the token endpoint (a simulator on 127.0.0.1).
    #[must_use]
    pub fn with_token_uri(self, uri: impl Into<String>) -> Self {
        let uri = uri.into();
        match self {
            GoogleCredentials::AuthorizedUser {
                client_id,
                client_secret,
                refresh_token,
                ..
            } => GoogleCredentials::AuthorizedUser {
                client_id,
                client_secret,
                refresh_token,
                token_uri: uri,
            },
            GoogleCredentials::ServiceAccount(key) => {
                GoogleCredentials::ServiceAccount(key.with_token_uri(uri))
            }
            other => other,
        }
    }

    /// The `crm-http` authentication for these credentials and `scopes`.
    ///
    /// # Errors
    /// [`crm_core::ErrorKind::InvalidInput`] for a token URI that is not a
    /// URL or a private key that cannot sign.
    pub fn to_auth(&self, scopes: &[String]) -> Result<Auth> {
        match self {
            GoogleCredentials::AuthorizedUser {
                client_id,
                client_secret,
                refresh_token,
                token_uri,
            } => {
                let url = Url::parse(token_uri)
                    .map_err(|_| Error::invalid_input("token_uri is not a URL"))?;
                Ok(Auth::oauth(
                    RefreshTokenFlow::new(url, client_id.clone(), refresh_token.clone())
                        .client_secret(client_secret.clone()),
                ))
            }
            GoogleCredentials::ServiceAccount(key) => Ok(Auth::oauth(
                JwtBearerFlow::google_service_account(key, scopes.iter().cloned())?,
            )),
            GoogleCredentials::AccessToken(t) => Ok(Auth::bearer(t.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorized_user_json_and_debug_hides_secrets() {
        let c = GoogleCredentials::from_json(
            r#"{"type":"authorized_user","client_id":"cid.apps.googleusercontent.com","client_secret":"s3cret-value","refresh_token":"1//refresh-value"}"#,
        )
        .unwrap();
        let dbg = format!("{c:?}");
        assert!(dbg.contains("cid.apps"));
        assert!(!dbg.contains("s3cret-value") && !dbg.contains("refresh-value"));
        let GoogleCredentials::AuthorizedUser { token_uri, .. } = &c else {
            panic!()
        };
        assert_eq!(token_uri, GOOGLE_TOKEN_URI);
        let c = c.with_token_uri("http://127.0.0.1:9/token");
        assert!(format!("{c:?}").contains("127.0.0.1:9"));
        assert!(c.to_auth(&[]).is_ok());
    }

    #[test]
    fn bad_credentials_are_clear_errors_without_content() {
        let e =
            GoogleCredentials::from_json(r#"{"type":"external_account","secret":"zzz-secret"}"#)
                .unwrap_err();
        assert!(e.to_string().contains("external_account"));
        assert!(!e.to_string().contains("zzz-secret"));
        let e = GoogleCredentials::from_json("not json zzz-secret").unwrap_err();
        assert!(!e.to_string().contains("zzz-secret"));
        let e = GoogleCredentials::from_json(r#"{"type":"authorized_user","client_id":"x"}"#)
            .unwrap_err();
        assert!(e.to_string().contains("authorized_user"));
    }
}
