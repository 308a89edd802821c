//! Authentication: a private app's static token, or an OAuth app's
//! refresh token (HubSpot access tokens live 30 minutes; they are refreshed
//! 5 minutes ahead of expiry, one refresh shared by every concurrent
//! request, by `crm-http`).
//!
//! The OAuth install flow (authorization code) is [`authorization_flow`]:
//! send the user to its URL, exchange the code, and configure the connector
//! with the refresh token it returns.

use std::time::Duration;

use crm_core::{Error, Result};
use crm_http::{Auth, AuthorizationCodeFlow, RefreshTokenFlow, TokenOptions};
use url::Url;

use crate::config::{AuthConfig, DEFAULT_AUTHORIZE_URL, HubSpotConfig};

/// How long before expiry an OAuth access token is refreshed, by default
/// ([`crate::HubSpotConfigBuilder::token_refresh_ahead`] changes it).
pub const REFRESH_AHEAD: Duration = Duration::from_secs(5 * 60);

/// The CRM scopes the connector needs for the default objects.
pub const DEFAULT_SCOPES: [&str; 9] = [
    "oauth",
    "crm.objects.contacts.read",
    "crm.objects.contacts.write",
    "crm.objects.companies.read",
    "crm.objects.companies.write",
    "crm.objects.deals.read",
    "crm.objects.deals.write",
    "crm.schemas.contacts.read",
    "crm.schemas.deals.read",
];

/// The `crm-http` authentication for a configuration.
///
/// # Errors
/// [`crm_core::ErrorKind::InvalidInput`] when an OAuth configuration has no
/// token URL (a built [`HubSpotConfig`] always has one).
pub fn http_auth(config: &HubSpotConfig) -> Result<Auth> {
    match config.auth() {
        AuthConfig::PrivateApp { access_token } => Ok(Auth::bearer(access_token.clone())),
        AuthConfig::OAuth {
            client_id,
            client_secret,
            refresh_token,
            ..
        } => {
            let token_url = config
                .token_url()
                .cloned()
                .ok_or_else(|| Error::invalid_input("OAuth configuration without a token URL"))?;
            let flow = RefreshTokenFlow::new(token_url, client_id.clone(), refresh_token.clone())
                .client_secret(client_secret.clone());
            Ok(Auth::oauth_with(
                flow,
                TokenOptions::default().refresh_skew(config.token_refresh_ahead()),
            ))
        }
    }
}

/// The OAuth install flow of an app: HubSpot's authorization page and the
/// token endpoint of `config` (so the simulator's works too).
///
/// # Errors
/// [`crm_core::ErrorKind::InvalidInput`] when `config` is not an OAuth
/// configuration or a URL is invalid.
pub fn authorization_flow(
    config: &HubSpotConfig,
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
    let token_url = config
        .token_url()
        .cloned()
        .ok_or_else(|| Error::invalid_input("OAuth configuration without a token URL"))?;
    Ok(AuthorizationCodeFlow::new(
        client_id.clone(),
        parse(authorize_url.unwrap_or(DEFAULT_AUTHORIZE_URL))?,
        token_url,
        parse(redirect_url)?,
    )
    .client_secret(client_secret.clone())
    .scopes(DEFAULT_SCOPES))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    #[test]
    fn private_app_is_a_bearer_token_and_oauth_refreshes() {
        let c = HubSpotConfig::private_app(SecretString::from("pat-secret".to_owned()))
            .build()
            .unwrap();
        let a = http_auth(&c).unwrap();
        assert!(!a.is_refreshable());
        assert!(!format!("{a:?}").contains("pat-secret"));
        let o = HubSpotConfig::oauth(
            "cid",
            SecretString::from("cs".to_owned()),
            SecretString::from("rt".to_owned()),
        )
        .build()
        .unwrap();
        assert!(http_auth(&o).unwrap().is_refreshable());
    }

    #[test]
    fn install_flow_points_at_hubspot_with_scopes() {
        let o = HubSpotConfig::oauth(
            "cid",
            SecretString::from("cs".to_owned()),
            SecretString::from("rt".to_owned()),
        )
        .build()
        .unwrap();
        let flow = authorization_flow(&o, "https://app.example.com/callback", None).unwrap();
        let req = flow.authorize_url();
        let url = req.url.as_str();
        assert!(url.starts_with("https://app.hubspot.com/oauth/authorize"));
        assert!(url.contains("client_id=cid"));
        assert!(url.contains("crm.objects.contacts.read"));
        let p = HubSpotConfig::private_app(SecretString::from("x".to_owned()))
            .build()
            .unwrap();
        assert!(authorization_flow(&p, "https://a/b", None).is_err());
    }
}
