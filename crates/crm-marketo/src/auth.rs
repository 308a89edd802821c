//! Authentication: a LaunchPoint custom service's client id and secret are
//! exchanged at the identity endpoint (`GET /identity/oauth/token` with
//! `grant_type=client_credentials`, `client_id`, `client_secret` in the query,
//! as Marketo's Swagger describes it) for an access token of about an hour.
//!
//! The token goes in an `Authorization: Bearer` header (Marketo stopped
//! accepting it as an `access_token` query parameter). `crm-http` tracks its
//! expiry, refreshes it a minute ahead (one refresh for all concurrent
//! requests), and refreshes once more when Marketo answers 601 (invalid) or
//! 602 (expired) inside a 200 body, then re-sends.

use std::time::Duration;

use crm_http::{Auth, ClientCredentialsFlow, TokenOptions, TokenRequestStyle};

use crate::config::MarketoConfig;

/// How long before expiry the token is refreshed.
pub const REFRESH_AHEAD: Duration = Duration::from_secs(60);

/// The `crm-http` authentication for a configuration.
pub fn http_auth(config: &MarketoConfig) -> Auth {
    let flow = ClientCredentialsFlow::new(
        config.identity_url().clone(),
        config.client_id(),
        config.client_secret.clone(),
    )
    .style(TokenRequestStyle::GetQuery);
    Auth::oauth_with(flow, TokenOptions::default().refresh_skew(REFRESH_AHEAD))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    #[test]
    fn client_credentials_are_refreshable_and_hidden() {
        let c = MarketoConfig::builder(
            "https://1-2-3.mktorest.com",
            "cid",
            SecretString::from("shh-secret".to_owned()),
        )
        .build()
        .unwrap();
        let a = http_auth(&c);
        assert!(a.is_refreshable());
        assert!(!format!("{a:?}").contains("shh-secret"));
    }
}
