//! IAM: fixed roles (each a set of permissions), policies (bindings of a role to members) with etags, and
//! the decision "may this principal do that here", which takes the union of the policies that apply
//! (installation, project, then the resource itself). Pure functions: no I/O.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::IdentityError;
use crate::principal::{Member, Principal};

/// Something a principal may be allowed to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    /// Send requests to a service.
    RoutesInvoke,
    /// Read services and revisions.
    ServicesGet,
    /// Read instances' logs (and a failed revision's last log lines).
    LogsRead,
    /// Deploy, change traffic, delete services and revisions.
    ServicesWrite,
    /// Read a service's IAM policy.
    ServicesGetIamPolicy,
    /// Change a service's IAM policy.
    ServicesSetIamPolicy,
    /// Read a project's IAM policy.
    ProjectsGetIamPolicy,
    /// Change a project's IAM policy.
    ProjectsSetIamPolicy,
    /// Create a project (on first deploy into it).
    ProjectsCreate,
    /// List and read service accounts.
    ServiceAccountsGet,
    /// Create, disable and delete service accounts and their keys.
    ServiceAccountsWrite,
    /// Run a revision as a service account.
    ServiceAccountsActAs,
    /// Mint tokens for a service account (impersonation).
    ServiceAccountsGetOpenIdToken,
    /// Manage users.
    UsersWrite,
    /// List the server's images.
    ImagesGet,
    /// Prune images, set registry credentials, deploy images from the server's local files.
    ImagesWrite,
    /// Deploy host commands that run unsandboxed, or that see host paths other users cannot read.
    InstancesHostAccess,
    /// Let a service reach the operator's private networks (`--vpc-egress`).
    NetworksUse,
    /// Attach one of the operator's seccomp exceptions to a service (`--seccomp-exception`).
    InstancesLoosenSandbox,
    /// Read the installation's IAM policy.
    InstallationGetIamPolicy,
    /// Change the installation's IAM policy.
    InstallationSetIamPolicy,
}

impl Permission {
    /// Google-style name.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::RoutesInvoke => "run.routes.invoke",
            Permission::ServicesGet => "run.services.get",
            Permission::LogsRead => "logging.logEntries.list",
            Permission::ServicesWrite => "run.services.update",
            Permission::ServicesGetIamPolicy => "run.services.getIamPolicy",
            Permission::ServicesSetIamPolicy => "run.services.setIamPolicy",
            Permission::ProjectsGetIamPolicy => "resourcemanager.projects.getIamPolicy",
            Permission::ProjectsSetIamPolicy => "resourcemanager.projects.setIamPolicy",
            Permission::ProjectsCreate => "resourcemanager.projects.create",
            Permission::ServiceAccountsGet => "iam.serviceAccounts.get",
            Permission::ServiceAccountsWrite => "iam.serviceAccounts.update",
            Permission::ServiceAccountsActAs => "iam.serviceAccounts.actAs",
            Permission::ServiceAccountsGetOpenIdToken => "iam.serviceAccounts.getOpenIdToken",
            Permission::UsersWrite => "pier.users.update",
            Permission::ImagesGet => "pier.images.list",
            Permission::ImagesWrite => "pier.images.update",
            Permission::InstancesHostAccess => "pier.instances.hostAccess",
            Permission::NetworksUse => "vpcaccess.connectors.use",
            Permission::InstancesLoosenSandbox => "pier.instances.loosenSandbox",
            // The installation stands where Google Cloud has the organization.
            Permission::InstallationGetIamPolicy => "resourcemanager.organizations.getIamPolicy",
            Permission::InstallationSetIamPolicy => "resourcemanager.organizations.setIamPolicy",
        }
    }
}

use Permission::*;

/// A predefined role.
#[derive(Debug)]
pub struct Role {
    /// `roles/...`.
    pub name: &'static str,
    /// What it allows.
    pub permissions: &'static [Permission],
}

/// The roles Pier knows.
pub const ROLES: &[Role] = &[
    Role {
        name: "roles/run.invoker",
        permissions: &[RoutesInvoke],
    },
    Role {
        name: "roles/run.viewer",
        permissions: &[ServicesGet, ServicesGetIamPolicy],
    },
    Role {
        name: "roles/run.developer",
        permissions: &[
            RoutesInvoke,
            ServicesGet,
            // Not in Cloud Run's role (there, add roles/logging.viewer): a deploy that fails shows the
            // instance's last log lines, and a developer must see why.
            LogsRead,
            ServicesWrite,
            ServicesGetIamPolicy,
            ImagesGet,
        ],
    },
    Role {
        name: "roles/run.admin",
        permissions: &[
            RoutesInvoke,
            ServicesGet,
            LogsRead,
            ServicesWrite,
            ServicesGetIamPolicy,
            ServicesSetIamPolicy,
            ImagesGet,
        ],
    },
    Role {
        name: "roles/owner",
        permissions: &[
            RoutesInvoke,
            ServicesGet,
            LogsRead,
            ServicesWrite,
            ServicesGetIamPolicy,
            ServicesSetIamPolicy,
            ProjectsGetIamPolicy,
            ProjectsSetIamPolicy,
            ProjectsCreate,
            ServiceAccountsGet,
            ServiceAccountsWrite,
            ServiceAccountsActAs,
            ServiceAccountsGetOpenIdToken,
            UsersWrite,
            ImagesGet,
            ImagesWrite,
            InstancesHostAccess,
            NetworksUse,
            InstancesLoosenSandbox,
            InstallationGetIamPolicy,
            InstallationSetIamPolicy,
        ],
    },
    Role {
        name: "roles/logging.viewer",
        permissions: &[LogsRead],
    },
    Role {
        name: "roles/vpcaccess.user",
        permissions: &[NetworksUse],
    },
    Role {
        name: "roles/iam.serviceAccountUser",
        permissions: &[ServiceAccountsActAs, ServiceAccountsGet],
    },
    Role {
        name: "roles/iam.serviceAccountTokenCreator",
        permissions: &[ServiceAccountsGetOpenIdToken, ServiceAccountsGet],
    },
];

/// Looks a role up by name.
pub fn role(name: &str) -> Option<&'static Role> {
    ROLES.iter().find(|r| r.name == name)
}

fn known_roles() -> String {
    ROLES.iter().map(|r| r.name).collect::<Vec<_>>().join(", ")
}

/// One role granted to members.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    /// `roles/...`.
    pub role: String,
    /// Members (`user:...`, `serviceAccount:...`, `allUsers`, `allAuthenticatedUsers`).
    pub members: Vec<String>,
}

/// An IAM policy, in Google's JSON shape.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Policy language version (always 1).
    #[serde(default = "one")]
    pub version: u32,
    /// Bindings.
    #[serde(default)]
    pub bindings: Vec<Binding>,
    /// Changes with every write; send it back to update, so concurrent edits do not overwrite each other.
    #[serde(default)]
    pub etag: String,
}

fn one() -> u32 {
    1
}

impl Policy {
    /// Checks roles and members; returns the policy normalized (members sorted and deduplicated, empty
    /// bindings dropped, bindings of the same role merged).
    pub fn normalized(&self) -> Result<Policy, IdentityError> {
        let mut out: Vec<Binding> = Vec::new();
        for b in &self.bindings {
            if role(&b.role).is_none() {
                return Err(IdentityError::Invalid(format!(
                    "unknown role {:?}: use one of {}",
                    b.role,
                    known_roles()
                )));
            }
            let mut members = BTreeSet::new();
            for m in &b.members {
                members.insert(m.parse::<Member>()?.to_string());
            }
            match out.iter_mut().find(|o| o.role == b.role) {
                Some(o) => o.members.extend(members),
                None => out.push(Binding {
                    role: b.role.clone(),
                    members: members.into_iter().collect(),
                }),
            }
        }
        for b in &mut out {
            b.members.sort();
            b.members.dedup();
        }
        out.retain(|b| !b.members.is_empty());
        out.sort_by(|a, b| a.role.cmp(&b.role));
        Ok(Policy {
            version: 1,
            bindings: out,
            etag: self.etag.clone(),
        })
    }

    /// Grants `role` to `member`. Returns whether it changed anything.
    pub fn add(&mut self, role_name: &str, member: &Member) -> Result<bool, IdentityError> {
        if role(role_name).is_none() {
            return Err(IdentityError::Invalid(format!(
                "unknown role {role_name:?}: use one of {}",
                known_roles()
            )));
        }
        let m = member.to_string();
        match self.bindings.iter_mut().find(|b| b.role == role_name) {
            Some(b) if b.members.contains(&m) => Ok(false),
            Some(b) => {
                b.members.push(m);
                b.members.sort();
                Ok(true)
            }
            None => {
                self.bindings.push(Binding {
                    role: role_name.to_owned(),
                    members: vec![m],
                });
                self.bindings.sort_by(|a, b| a.role.cmp(&b.role));
                Ok(true)
            }
        }
    }

    /// Revokes `role` from `member`. Returns whether it changed anything.
    pub fn remove(&mut self, role_name: &str, member: &Member) -> bool {
        let m = member.to_string();
        let mut changed = false;
        for b in self.bindings.iter_mut().filter(|b| b.role == role_name) {
            let before = b.members.len();
            b.members.retain(|x| *x != m);
            changed |= before != b.members.len();
        }
        self.bindings.retain(|b| !b.members.is_empty());
        changed
    }

    /// Whether `member` is bound to `role_name`.
    pub fn has(&self, role_name: &str, member: &Member) -> bool {
        let m = member.to_string();
        self.bindings
            .iter()
            .any(|b| b.role == role_name && b.members.contains(&m))
    }

    /// Every member (parsed) that this policy grants `permission`.
    pub fn members_with(&self, permission: Permission) -> Vec<Member> {
        self.bindings
            .iter()
            .filter(|b| role(&b.role).is_some_and(|r| r.permissions.contains(&permission)))
            .flat_map(|b| b.members.iter().filter_map(|m| m.parse().ok()))
            .collect()
    }
}

/// Whether `who` (`None`: unauthenticated) holds `permission` under the union of `policies`.
pub fn allows(policies: &[&Policy], who: Option<&Principal>, permission: Permission) -> bool {
    policies.iter().any(|p| {
        p.bindings.iter().any(|b| {
            role(&b.role).is_some_and(|r| r.permissions.contains(&permission))
                && b.members
                    .iter()
                    .filter_map(|m| m.parse::<Member>().ok())
                    .any(|m| m.covers(who))
        })
    })
}

/// A compiled answer to "who may invoke this service": built once per route snapshot so the gateway's
/// check is a set lookup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InvokerSet {
    /// Anyone, without a token.
    pub all_users: bool,
    /// Anyone with a valid token.
    pub all_authenticated: bool,
    /// These principals.
    pub principals: std::collections::HashSet<Principal>,
}

impl InvokerSet {
    /// Collects who holds `run.routes.invoke` under the union of `policies`.
    pub fn from_policies(policies: &[&Policy]) -> Self {
        let mut set = InvokerSet::default();
        for p in policies {
            for m in p.members_with(RoutesInvoke) {
                match m {
                    Member::AllUsers => set.all_users = true,
                    Member::AllAuthenticatedUsers => set.all_authenticated = true,
                    Member::User(e) => {
                        set.principals.insert(Principal::User(e));
                    }
                    Member::ServiceAccount(e) => {
                        set.principals.insert(Principal::ServiceAccount(e));
                    }
                }
            }
        }
        set
    }

    /// Whether `who` may invoke.
    pub fn allows(&self, who: Option<&Principal>) -> bool {
        self.all_users || who.is_some_and(|p| self.all_authenticated || self.principals.contains(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(bindings: &[(&str, &[&str])]) -> Policy {
        Policy {
            version: 1,
            bindings: bindings
                .iter()
                .map(|(r, ms)| Binding {
                    role: r.to_string(),
                    members: ms.iter().map(|m| m.to_string()).collect(),
                })
                .collect(),
            etag: String::new(),
        }
    }

    #[test]
    fn roles_grant_their_permissions_only() {
        let alice = Principal::User("alice@x".into());
        let p = policy(&[("roles/run.developer", &["user:alice@x"])]);
        assert!(allows(&[&p], Some(&alice), ServicesWrite));
        assert!(allows(&[&p], Some(&alice), RoutesInvoke));
        assert!(
            !allows(&[&p], Some(&alice), ServicesSetIamPolicy),
            "developers cannot change IAM"
        );
        assert!(!allows(&[&p], None, ServicesGet));
    }

    #[test]
    fn effective_permission_is_the_union() {
        let bob = Principal::User("bob@x".into());
        let project = policy(&[("roles/run.viewer", &["user:bob@x"])]);
        let service = policy(&[("roles/run.invoker", &["user:bob@x"])]);
        assert!(allows(&[&project, &service], Some(&bob), RoutesInvoke));
        assert!(allows(&[&project, &service], Some(&bob), ServicesGet));
        assert!(!allows(&[&project], Some(&bob), RoutesInvoke));
    }

    #[test]
    fn public_and_authenticated_members() {
        let public = policy(&[("roles/run.invoker", &["allUsers"])]);
        assert!(allows(&[&public], None, RoutesInvoke));
        let authed = policy(&[("roles/run.invoker", &["allAuthenticatedUsers"])]);
        assert!(!allows(&[&authed], None, RoutesInvoke));
        assert!(allows(
            &[&authed],
            Some(&Principal::ServiceAccount("s@x".into())),
            RoutesInvoke
        ));
        let set = InvokerSet::from_policies(&[&authed]);
        assert!(set.all_authenticated && !set.all_users);
    }

    #[test]
    fn bindings_add_remove_and_normalize() {
        let mut p = Policy::default();
        let m: Member = "allUsers".parse().unwrap();
        assert!(p.add("roles/run.invoker", &m).unwrap());
        assert!(!p.add("roles/run.invoker", &m).unwrap(), "idempotent");
        assert!(p.has("roles/run.invoker", &m));
        assert!(p.add("roles/run.nope", &m).is_err());
        assert!(p.remove("roles/run.invoker", &m));
        assert!(p.bindings.is_empty());
        let messy = policy(&[
            ("roles/run.invoker", &["user:B@x", "user:a@x"]),
            ("roles/run.invoker", &["user:b@x"]),
            ("roles/run.viewer", &[]),
        ]);
        let n = messy.normalized().unwrap();
        assert_eq!(n.bindings.len(), 1);
        assert_eq!(n.bindings[0].members, vec!["user:a@x", "user:b@x"]);
        let err = policy(&[("roles/editor", &["user:a@x"])])
            .normalized()
            .unwrap_err();
        assert!(err.to_string().contains("unknown role"));
        let err = policy(&[("roles/run.invoker", &["alice"])])
            .normalized()
            .unwrap_err();
        assert!(err.to_string().contains("not valid"));
    }

    #[test]
    fn policy_json_is_googles_shape() {
        let p: Policy = serde_json::from_str(
            r#"{"bindings":[{"role":"roles/run.invoker","members":["allUsers"]}],"etag":"abc"}"#,
        )
        .unwrap();
        assert_eq!(p.version, 1);
        assert_eq!(p.etag, "abc");
        assert!(serde_json::from_str::<Policy>(r#"{"bindings":[],"bogus":1}"#).is_err());
    }
}
