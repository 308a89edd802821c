//! Authentication: a personal API token (the `x-api-token` header, or the
//! `api_token` query parameter when configured), or an OAuth 2.0 app whose
//! access tokens are refreshed by `crm-http` ahead of expiry, one refresh
//! shared by every concurrent request, and once more on a 401.
//!
//! Pipedrive's token endpoint takes the client id and secret with HTTP
//! Basic authentication ("OAuth authorization" in Pipedrive's developer
//! docs); access tokens live an hour.
//!
//! Tokens are `secrecy` secrets: they never show in `Debug`, logs or
//! errors (crm-http scrubs them from error bodies and never logs URLs that
//! carry the query form).

use std::time::Duration;

use crm_core::{Error, Result};
use crm_http::{Auth, AuthorizationCodeFlow, ClientAuthMethod, RefreshTokenFlow, TokenOptions};
use url::Url;

use crate::config::{AuthConfig, DEFAULT_AUTHORIZE_URL, PipedriveConfig, TokenLocation};

/// The header carrying an API token.
pub const API_TOKEN_HEADER: &str = "x-api-token";
/// The query parameter carrying an API token (only when configured).
pub const API_TOKEN_QUERY: &str = "api_token";
/// How long before expiry an OAuth access token is refreshed.
pub const REFRESH_AHEAD: Duration = Duration::from_secs(5 * 60);

/// The `crm-http` authentication for a configuration.
///
/// # Errors
/// [`crm_core::ErrorKind::InvalidInput`] when the header cannot carry the token.
pub fn http_auth(config: &PipedriveConfig) -> Result<Auth> {
    match config.auth() {
        AuthConfig::ApiToken {
            api_token,
            location: TokenLocation::Header,
        } => Auth::api_key_header(API_TOKEN_HEADER, api_token.clone()),
        AuthConfig::ApiToken {
            api_token,
            location: TokenLocation::Query,
        } => Ok(Auth::api_key_query(API_TOKEN_QUERY, api_token.clone())),
        AuthConfig::OAuth {
            client_id,
            client_secret,
            refresh_token,
            ..
        } => {
            let flow = RefreshTokenFlow::new(
                config.token_url().clone(),
                client_id.clone(),
                refresh_token.clone(),
            )
            .client_secret(client_secret.clone())
            .client_auth(ClientAuthMethod::BasicAuth);
            Ok(Auth::oauth_with(
                flow,
                TokenOptions::default().refresh_skew(REFRESH_AHEAD),
            ))
        }
    }
}

/// The OAuth install flow of an app: Pipedrive's authorization page (or
/// `authorize_url`) and the configured token endpoint.
///
/// # Errors
/// [`crm_core::ErrorKind::InvalidInput`] when `config` is not an OAuth
/// configuration or a URL is invalid.
pub fn authorization_flow(
    config: &PipedriveConfig,
    redirect_url: &str,
    authorize_url: Option<&str>,
) -> Result<AuthorizationCodeFlow> {
    let AuthConfig::OAuth {
        client_id,
        client_secret,
        ..
    } = config.auth()
    else {
        return Err(Error::invalid_input(
            "the authorization-code flow needs an OAuth app configuration",
        ));
    };
    let parse = |u: &str| {
        Url::parse(u).map_err(|e| Error::invalid_input(format!("invalid URL `{u}`: {e}")))
    };
    Ok(AuthorizationCodeFlow::new(
        client_id.clone(),
        parse(authorize_url.unwrap_or(DEFAULT_AUTHORIZE_URL))?,
        config.token_url().clone(),
        parse(redirect_url)?,
    )
    .client_secret(client_secret.clone())
    .client_auth(ClientAuthMethod::BasicAuth))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    #[test]
    fn api_token_and_oauth_auth() {
        let c = PipedriveConfig::api_token(SecretString::from("tok-secret".to_owned()))
            .build()
            .unwrap();
        let a = http_auth(&c).unwrap();
        assert!(!a.is_refreshable());
        assert!(!format!("{a:?}").contains("tok-secret"));
        let q = PipedriveConfig::api_token(SecretString::from("tok-secret".to_owned()))
            .token_in_query()
            .build()
            .unwrap();
        assert!(!format!("{:?}", http_auth(&q).unwrap()).contains("tok-secret"));
        let o = PipedriveConfig::oauth(
            "cid",
            SecretString::from("cs".to_owned()),
            SecretString::from("rt".to_owned()),
        )
        .build()
        .unwrap();
        assert!(http_auth(&o).unwrap().is_refreshable());
        let flow = authorization_flow(&o, "https://app.example.com/cb", None).unwrap();
        let url = flow.authorize_url().url.to_string();
        assert!(url.starts_with("https://oauth.pipedrive.com/oauth/authorize"));
        assert!(url.contains("client_id=cid"));
        assert!(authorization_flow(&c, "https://a/b", None).is_err());
    }
}
