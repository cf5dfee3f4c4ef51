//! Validated names: projects, services, revisions, tags and instances.
//!
//! Each name is parsed once at the edge (CLI flag, API path, manifest) and carried as its own type
//! afterwards, so code deeper in Pier never re-checks a `String`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::NameError;

/// Longest service name Cloud Run accepts.
pub const MAX_SERVICE_NAME: usize = 49;
/// Longest project name.
pub const MAX_PROJECT_NAME: usize = 30;
/// Longest DNS label; hosts built from names must fit in one.
pub const MAX_DNS_LABEL: usize = 63;

/// Checks the shape shared by every Pier name: a DNS label that starts with a lowercase letter, holds only
/// lowercase letters, digits and hyphens, and does not end with a hyphen.
fn check_label(kind: &'static str, value: &str, max: usize) -> Result<(), NameError> {
    let invalid = |reason: &str| NameError {
        kind,
        value: value.chars().take(80).collect(),
        reason: reason.to_owned(),
    };
    if value.is_empty() {
        return Err(invalid("it is empty"));
    }
    if value.len() > max {
        return Err(invalid(&format!("it is longer than {max} characters")));
    }
    if !value.as_bytes()[0].is_ascii_lowercase() {
        return Err(invalid("it must start with a lowercase letter"));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(invalid(&format!(
            "it contains {c:?}; use only lowercase letters, digits and hyphens"
        )));
    }
    if value.ends_with('-') {
        return Err(invalid("it must not end with a hyphen"));
    }
    // `---` separates a tag from its service in hosts (`TAG---NAME-HASH`), and `--` a hosting channel
    // from its site (`SITE--CHANNEL-HASH`): no name may hold either, so no name of one kind can form the
    // host of another.
    if value.contains("--") {
        return Err(invalid(
            "it must not contain two hyphens in a row (they separate names in service and tag URLs)",
        ));
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $check:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                let check: fn(&str) -> Result<(), NameError> = $check;
                check(s)?;
                Ok(Self(s.to_owned()))
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                let check: fn(&str) -> Result<(), NameError> = $check;
                check(&s)?;
                Ok(Self(s))
            }
        }

        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                String::schema()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

name_type!(
    /// A project: the namespace services live in (`default` unless `--project` says otherwise).
    ProjectName,
    "project",
    |s| check_label("project", s, MAX_PROJECT_NAME)
);

name_type!(
    /// A service name, by Cloud Run's rules: lowercase letters, digits and hyphens, starting with a
    /// letter, at most 49 characters, no trailing hyphen.
    ServiceName,
    "service",
    |s| check_label("service", s, MAX_SERVICE_NAME)
);

name_type!(
    /// A revision name, `SERVICE-NNNNN-xxx` when Pier makes it.
    RevisionName,
    "revision",
    |s| check_label("revision", s, MAX_DNS_LABEL)
);

name_type!(
    /// A traffic tag: gives a revision its own URL, `TAG---SERVICE-HASH.DOMAIN`.
    Tag,
    "tag",
    |s| {
        check_label("tag", s, MAX_DNS_LABEL)?;
        if s.contains("---") {
            return Err(NameError {
                kind: "tag",
                value: s.to_owned(),
                reason: "it must not contain three hyphens in a row (they separate tag and service in URLs)"
                    .to_owned(),
            });
        }
        if s.eq_ignore_ascii_case("latest") {
            return Err(NameError {
                kind: "tag",
                value: s.to_owned(),
                reason: "LATEST is reserved for the latest ready revision".to_owned(),
            });
        }
        Ok(())
    }
);

name_type!(
    /// One running copy of a revision, `REVISION-xxxxx`.
    InstanceId,
    "instance",
    |s| check_label("instance", s, 80)
);

impl ProjectName {
    /// The project every command uses when none is named.
    pub fn default_project() -> Self {
        Self("default".to_owned())
    }
}

impl RevisionName {
    /// The name of a service's `seq`-th revision, with a random suffix (`hello-00001-k3d`).
    pub fn for_service(service: &ServiceName, seq: u32, suffix: &str) -> Self {
        Self(format!("{service}-{seq:05}-{suffix}"))
    }

    /// Whether this revision belongs to `service` by its name's prefix.
    pub fn belongs_to(&self, service: &ServiceName) -> bool {
        self.0
            .strip_prefix(service.as_str())
            .is_some_and(|rest| rest.starts_with('-'))
    }
}

impl InstanceId {
    /// An instance id made of its revision's name and a random suffix.
    pub fn for_revision(revision: &RevisionName, suffix: &str) -> Self {
        Self(format!("{revision}-{suffix}"))
    }
}

impl Default for ProjectName {
    fn default() -> Self {
        Self::default_project()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_follow_cloud_run_rules() {
        for ok in ["a", "hello", "hello-world", "a1", "x".repeat(49).as_str()] {
            assert!(ok.parse::<ServiceName>().is_ok(), "{ok} should be valid");
        }
        let cases = [
            ("", "empty"),
            ("Hello", "start with a lowercase letter"),
            ("1abc", "start with a lowercase letter"),
            ("-abc", "start with a lowercase letter"),
            ("abc-", "end with a hyphen"),
            ("ab_c", "contains '_'"),
            ("ab.c", "contains '.'"),
        ];
        for (bad, why) in cases {
            let err = bad.parse::<ServiceName>().unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
            assert!(err.starts_with("invalid service name"), "{err}");
        }
        let err = "x"
            .repeat(50)
            .parse::<ServiceName>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("longer than 49"), "{err}");
    }

    #[test]
    fn no_name_can_form_another_resources_host() {
        // A service named like a tag URL would take over that tag's host.
        for bad in ["green---b", "a--b"] {
            let err = bad.parse::<ServiceName>().unwrap_err().to_string();
            assert!(err.contains("two hyphens"), "{bad}: {err}");
            assert!(bad.parse::<ProjectName>().is_err());
        }
        assert!("a-b-c".parse::<ServiceName>().is_ok());
    }

    #[test]
    fn tags_reject_reserved_and_separator() {
        assert!("green".parse::<Tag>().is_ok());
        assert!("a---b".parse::<Tag>().is_err());
        assert!("latest".parse::<Tag>().is_err());
    }

    #[test]
    fn revision_names_are_numbered() {
        let s: ServiceName = "hello".parse().unwrap();
        let r = RevisionName::for_service(&s, 7, "abc");
        assert_eq!(r.as_str(), "hello-00007-abc");
        assert!(r.belongs_to(&s));
        assert!(!r.belongs_to(&"hell".parse().unwrap()));
    }

    #[test]
    fn names_round_trip_through_json() {
        let s: ServiceName = serde_json::from_str("\"api\"").unwrap();
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"api\"");
        assert!(serde_json::from_str::<ServiceName>("\"API\"").is_err());
    }
}
