//! Who can act: users and service accounts (principals), and the member strings IAM policies use
//! (`user:alice@example.com`, `serviceAccount:caller@default.iam.pier.localhost`, `allUsers`,
//! `allAuthenticatedUsers`).

use std::fmt;
use std::str::FromStr;

use crate::IdentityError;

/// An authenticated identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Principal {
    /// A person, by email.
    User(String),
    /// A service account, by email (`NAME@PROJECT.iam.DOMAIN`).
    ServiceAccount(String),
}

impl Principal {
    /// The email.
    pub fn email(&self) -> &str {
        match self {
            Principal::User(e) | Principal::ServiceAccount(e) => e,
        }
    }

    /// The policy member naming exactly this principal.
    pub fn member(&self) -> Member {
        match self {
            Principal::User(e) => Member::User(e.clone()),
            Principal::ServiceAccount(e) => Member::ServiceAccount(e.clone()),
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.member().fmt(f)
    }
}

/// A member of an IAM binding.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Member {
    /// Anyone, with or without a token.
    AllUsers,
    /// Anyone with a valid token.
    AllAuthenticatedUsers,
    /// One user.
    User(String),
    /// One service account.
    ServiceAccount(String),
}

impl Member {
    /// Whether this member covers `who` (`None`: an unauthenticated caller).
    pub fn covers(&self, who: Option<&Principal>) -> bool {
        match (self, who) {
            (Member::AllUsers, _) => true,
            (Member::AllAuthenticatedUsers, Some(_)) => true,
            (Member::User(e), Some(Principal::User(p))) => e == p,
            (Member::ServiceAccount(e), Some(Principal::ServiceAccount(p))) => e == p,
            _ => false,
        }
    }
}

/// Checks and lowercases an email address: one `@`, something on both sides, no spaces, at most 254
/// characters.
pub fn normalize_email(email: &str) -> Result<String, IdentityError> {
    let e = email.trim();
    let bad = |why: &str| IdentityError::Invalid(format!("{email:?} is not a valid email: {why}"));
    if e.len() > 254 {
        return Err(bad("longer than 254 characters"));
    }
    let Some((local, domain)) = e.split_once('@') else {
        return Err(bad("it has no @"));
    };
    if local.is_empty() || domain.is_empty() || domain.contains('@') {
        return Err(bad("use NAME@DOMAIN"));
    }
    if e.chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == ',' || c == '"')
    {
        return Err(bad("it contains spaces or separators"));
    }
    Ok(e.to_ascii_lowercase())
}

impl FromStr for Member {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, IdentityError> {
        match s {
            "allUsers" => return Ok(Member::AllUsers),
            "allAuthenticatedUsers" => return Ok(Member::AllAuthenticatedUsers),
            _ => {}
        }
        if let Some(e) = s.strip_prefix("user:") {
            return Ok(Member::User(normalize_email(e)?));
        }
        if let Some(e) = s.strip_prefix("serviceAccount:") {
            return Ok(Member::ServiceAccount(normalize_email(e)?));
        }
        Err(IdentityError::Invalid(format!(
            "member {s:?} is not valid: use user:EMAIL, serviceAccount:EMAIL, allUsers or allAuthenticatedUsers"
        )))
    }
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Member::AllUsers => f.write_str("allUsers"),
            Member::AllAuthenticatedUsers => f.write_str("allAuthenticatedUsers"),
            Member::User(e) => write!(f, "user:{e}"),
            Member::ServiceAccount(e) => write!(f, "serviceAccount:{e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_parse_and_print() {
        for s in [
            "allUsers",
            "allAuthenticatedUsers",
            "user:alice@example.com",
            "serviceAccount:caller@default.iam.pier.localhost",
        ] {
            assert_eq!(s.parse::<Member>().unwrap().to_string(), s);
        }
        assert_eq!(
            "user:Alice@Example.com".parse::<Member>().unwrap(),
            Member::User("alice@example.com".into())
        );
        for bad in [
            "alice@example.com",
            "user:",
            "user:nobody",
            "group:x@y",
            "user:a b@c",
        ] {
            assert!(bad.parse::<Member>().is_err(), "{bad}");
        }
    }

    #[test]
    fn coverage() {
        let alice = Principal::User("alice@x".into());
        let sa = Principal::ServiceAccount("alice@x".into());
        assert!(Member::AllUsers.covers(None));
        assert!(!Member::AllAuthenticatedUsers.covers(None));
        assert!(Member::AllAuthenticatedUsers.covers(Some(&sa)));
        assert!(Member::User("alice@x".into()).covers(Some(&alice)));
        assert!(
            !Member::User("alice@x".into()).covers(Some(&sa)),
            "kinds differ"
        );
    }
}
