//! Service-level settings that are not part of a revision: ingress, the invoker IAM check, custom audiences.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::SpecError;

/// Which requests may reach a service, checked before authentication (Cloud Run's ingress setting).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Ingress {
    /// Every request.
    #[default]
    All,
    /// Only requests from Pier's own instances (service-to-service calls); others get 404.
    Internal,
    /// Internal requests and those through Pier's own middleware routes.
    InternalAndCloudLoadBalancing,
}

impl Ingress {
    /// The flag value.
    pub fn as_str(self) -> &'static str {
        match self {
            Ingress::All => "all",
            Ingress::Internal => "internal",
            Ingress::InternalAndCloudLoadBalancing => "internal-and-cloud-load-balancing",
        }
    }
}

impl fmt::Display for Ingress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Ingress {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        match s {
            "all" => Ok(Ingress::All),
            "internal" => Ok(Ingress::Internal),
            "internal-and-cloud-load-balancing" => Ok(Ingress::InternalAndCloudLoadBalancing),
            other => Err(SpecError::new(format!(
                "--ingress {other:?} is not valid: use all, internal or internal-and-cloud-load-balancing"
            ))),
        }
    }
}

/// Checks a custom audience: any non-empty string without whitespace, at most 512 characters.
pub fn validate_audience(aud: &str) -> Result<(), SpecError> {
    if aud.is_empty() || aud.len() > 512 || aud.chars().any(char::is_whitespace) {
        return Err(SpecError::new(format!(
            "custom audience {aud:?} is not valid: use a non-empty string without spaces (at most 512 characters)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingress_round_trips() {
        for s in ["all", "internal", "internal-and-cloud-load-balancing"] {
            let i: Ingress = s.parse().unwrap();
            assert_eq!(i.to_string(), s);
            assert_eq!(serde_json::to_string(&i).unwrap(), format!("\"{s}\""));
        }
        assert!(
            "private"
                .parse::<Ingress>()
                .unwrap_err()
                .to_string()
                .contains("use all")
        );
        assert!(validate_audience("my-aud").is_ok());
        assert!(validate_audience("a b").is_err());
    }
}
