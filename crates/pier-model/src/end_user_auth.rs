//! End-user authentication on a service (`--end-user-auth`): the app's users sign in with an identity
//! platform (any OpenID Connect issuer, Firebase Authentication / Identity Platform, or Pier itself), and
//! Pier checks their ID token before the request reaches the app, as an API gateway's JWT scheme does.
//! This is the app's own auth, distinct from IAM: on a private service the caller's IAM token travels in
//! `X-Serverless-Authorization` and the end user's in `Authorization`, as on Cloud Run.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::SpecError;

/// Firebase Authentication's token signing keys (Google's documented JWKS for ID tokens).
pub const FIREBASE_JWKS: &str =
    "https://www.googleapis.com/service_accounts/v1/jwk/securetoken@system.gserviceaccount.com";

/// What a service asks of its end users.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndUserAuth {
    /// `iss` the tokens must carry.
    pub issuer: String,
    /// Where the keys are; `None`: OpenID discovery from the issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// Accepted audiences; empty: the service's URLs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// Requests without a token pass (with no user header); a bad token is still refused.
    #[serde(default)]
    pub optional: bool,
}

impl EndUserAuth {
    /// Reads `oidc:ISSUER[,audiences=A|B]` or `firebase:PROJECT_ID`.
    pub fn parse(spec: &str, optional: bool) -> Result<Self, SpecError> {
        let bad = |why: &str| {
            SpecError::new(format!(
                "--end-user-auth {spec:?}: {why}; use oidc:https://ISSUER[,audiences=A|B] or firebase:PROJECT_ID"
            ))
        };
        let (kind, rest) = spec.split_once(':').ok_or_else(|| bad("no kind"))?;
        match kind {
            "firebase" => {
                let project = rest.trim();
                if project.is_empty()
                    || !project
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                {
                    return Err(bad(
                        "a Firebase project id is lowercase letters, digits and hyphens",
                    ));
                }
                Ok(Self {
                    issuer: format!("https://securetoken.google.com/{project}"),
                    jwks_uri: Some(FIREBASE_JWKS.into()),
                    audiences: vec![project.to_owned()],
                    optional,
                })
            }
            "oidc" => {
                let mut parts = rest.split(',');
                let issuer = parts.next().unwrap_or("").trim().trim_end_matches('/');
                if !issuer.starts_with("https://") || issuer.len() <= "https://".len() {
                    return Err(bad("the issuer is an https:// URL"));
                }
                let mut audiences = Vec::new();
                for p in parts {
                    let (k, v) = p
                        .split_once('=')
                        .ok_or_else(|| bad("options are key=value"))?;
                    match k.trim() {
                        "audiences" => {
                            for a in v.split('|').map(str::trim).filter(|a| !a.is_empty()) {
                                crate::settings::validate_audience(a)?;
                                audiences.push(a.to_owned());
                            }
                        }
                        other => return Err(bad(&format!("unknown option {other:?}"))),
                    }
                }
                Ok(Self {
                    issuer: issuer.to_owned(),
                    jwks_uri: None,
                    audiences,
                    optional,
                })
            }
            _ => Err(bad("unknown kind")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_flag_forms() {
        let f = EndUserAuth::parse("firebase:my-app", false).unwrap();
        assert_eq!(f.issuer, "https://securetoken.google.com/my-app");
        assert_eq!(f.audiences, vec!["my-app"]);
        assert_eq!(f.jwks_uri.as_deref(), Some(FIREBASE_JWKS));
        let o = EndUserAuth::parse("oidc:https://idp.example/,audiences=a|b", true).unwrap();
        assert_eq!(o.issuer, "https://idp.example");
        assert_eq!(o.audiences, vec!["a", "b"]);
        assert!(o.optional);
        for bad in [
            "oidc:http://idp",
            "oidc:https://x,aud=a",
            "saml:x",
            "firebase:My App",
            "x",
        ] {
            assert!(EndUserAuth::parse(bad, false).is_err(), "{bad}");
        }
    }
}
