//! Service-account key files in Google's JSON format, which `google-auth` and the other Google client
//! libraries read unmodified. Pier keeps only the public half; the private key exists in this file alone.

use serde::{Deserialize, Serialize};

/// A service-account key file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyFile {
    /// Always `service_account`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The project.
    pub project_id: String,
    /// The key's id (the `kid` of assertions signed with it).
    pub private_key_id: String,
    /// PKCS#8 PEM.
    pub private_key: String,
    /// The service account's email.
    pub client_email: String,
    /// The service account's unique id.
    pub client_id: String,
    /// Where to send the user to sign in (unused by service accounts).
    pub auth_uri: String,
    /// Pier's token endpoint.
    pub token_uri: String,
    /// Where Pier's signing keys are published.
    pub auth_provider_x509_cert_url: String,
    /// Where this service account's keys would be published.
    pub client_x509_cert_url: String,
}

impl KeyFile {
    /// Builds the file for a new key.
    pub fn new(
        project: &str,
        key_id: &str,
        private_key_pem: &str,
        email: &str,
        client_id: &str,
        issuer: &str,
    ) -> Self {
        Self {
            kind: "service_account".into(),
            project_id: project.into(),
            private_key_id: key_id.into(),
            private_key: private_key_pem.into(),
            client_email: email.into(),
            client_id: client_id.into(),
            auth_uri: format!("{issuer}/auth"),
            token_uri: format!("{issuer}/token"),
            auth_provider_x509_cert_url: format!("{issuer}/jwks"),
            client_x509_cert_url: format!("{issuer}/jwks"),
        }
    }
}
