//! The identity side of the control plane: users, sessions, service accounts and their keys, IAM policies,
//! the token endpoint's grants, and the [`Directory`] snapshot that answers "who is this token" and "may
//! they" without touching the store.
//!
//! Resources and the policies that apply to them (their union decides):
//!
//! | resource | policies |
//! | --- | --- |
//! | the installation | `pier` |
//! | a project | `pier`, `projects/P` |
//! | a service | `pier`, `projects/P`, `projects/P/services/S` |
//! | a service account | `pier`, `projects/P`, `projects/P/serviceAccounts/EMAIL` |

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arc_swap::ArcSwap;
use jsonwebtoken::DecodingKey;
use pier_identity::external::ExternalIssuer;
use pier_identity::iam::{self, InvokerSet, Permission, Policy};
use pier_identity::keyfile::KeyFile;
use pier_identity::passwords::{hash_password, new_secret, secret_digest};
use pier_identity::principal::normalize_email;
use pier_identity::tokens::{
    self, CLI_CLIENT_ID, GOOGLE_TOKEN_URI, IdClaims, TokenError, verify_assertion,
};
use pier_identity::{Issuer, Member, Principal};
use pier_model::api::{KeyView, ServiceAccountView, UserView};
use pier_model::{ProjectName, ServiceName};
use pier_store::{KeyRecord, ServiceAccountRecord, Store, StoreError, UserRecord};

use pier_fault::ControlError;

mod accounts;
mod authorize;
mod grants;
mod signin;

pub use authorize::{AuthorizationRequest, AuthorizeError, CODE_LIFETIME, CONSOLE_CLIENT_ID};
pub use grants::{GrantError, TokenResponse};

type Result<T, E = ControlError> = std::result::Result<T, E>;

/// The etag of a resource that has no policy yet (Google uses the same value).
pub const EMPTY_POLICY_ETAG: &str = "ACAB";

/// Something policies attach to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resource {
    /// The whole installation.
    Installation,
    /// A project.
    Project(ProjectName),
    /// A service.
    Service(ProjectName, ServiceName),
    /// A service account (by email, in its project).
    ServiceAccount(String, String),
}

impl Resource {
    /// The policy keys that apply, broadest first.
    pub fn policy_keys(&self) -> Vec<String> {
        match self {
            Resource::Installation => vec!["pier".into()],
            Resource::Project(p) => vec!["pier".into(), format!("projects/{p}")],
            Resource::Service(p, s) => vec![
                "pier".into(),
                format!("projects/{p}"),
                format!("projects/{p}/services/{s}"),
            ],
            Resource::ServiceAccount(project, email) => vec![
                "pier".into(),
                format!("projects/{project}"),
                format!("projects/{project}/serviceAccounts/{email}"),
            ],
        }
    }

    /// The key of this resource's own policy.
    pub fn own_key(&self) -> String {
        self.policy_keys().pop().unwrap_or_else(|| "pier".into())
    }

    fn describe(&self) -> String {
        match self {
            Resource::Installation => "this Pier installation".into(),
            Resource::Project(p) => format!("project {p}"),
            Resource::Service(p, s) => format!("service {s} in project {p}"),
            Resource::ServiceAccount(_, e) => format!("service account {e}"),
        }
    }
}

#[derive(Clone, Debug)]
struct SaInfo {
    uid: String,
    project: String,
    disabled: bool,
}

/// An immutable snapshot of who exists and the policies, rebuilt after every identity change.
#[derive(Debug, Default)]
pub struct Directory {
    users: HashMap<String, String>,
    service_accounts: HashMap<String, SaInfo>,
    active_keys: HashSet<String>,
    policies: HashMap<String, Policy>,
}

impl Directory {
    /// Whether the claims belong to a principal (and key) that still exists and is enabled.
    pub fn live(&self, claims: &IdClaims) -> bool {
        let key_ok = claims
            .pier_key
            .as_ref()
            .is_none_or(|k| self.active_keys.contains(k));
        let principal_ok = if claims.pier_principal.as_deref() == Some("serviceAccount") {
            self.service_accounts
                .get(&claims.email)
                .is_some_and(|sa| sa.uid == claims.sub && !sa.disabled)
        } else {
            self.users
                .get(&claims.email)
                .is_some_and(|uid| *uid == claims.sub)
        };
        key_ok && principal_ok
    }

    /// The policies that apply to `resource`.
    pub fn policies_for(&self, resource: &Resource) -> Vec<&Policy> {
        resource
            .policy_keys()
            .iter()
            .filter_map(|k| self.policies.get(k))
            .collect()
    }

    /// Whether `who` holds `permission` on `resource`.
    pub fn allows(&self, who: &Principal, permission: Permission, resource: &Resource) -> bool {
        iam::allows(&self.policies_for(resource), Some(who), permission)
    }

    /// Who may invoke a service.
    pub fn invokers(&self, project: &ProjectName, service: &ServiceName) -> InvokerSet {
        InvokerSet::from_policies(
            &self.policies_for(&Resource::Service(project.clone(), service.clone())),
        )
    }

    /// Whether the service's own policy grants allUsers the invoker role.
    pub fn is_public(&self, project: &ProjectName, service: &ServiceName) -> bool {
        self.policies
            .get(&format!("projects/{project}/services/{service}"))
            .is_some_and(|p| p.has("roles/run.invoker", &Member::AllUsers))
    }

    fn sa(&self, email: &str) -> Option<&SaInfo> {
        self.service_accounts.get(email)
    }
}

/// `n` random decimal digits, not starting with 0 (the shape of Google's numeric unique ids).
pub(crate) fn random_digits(n: usize) -> Result<String> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b)
        .map_err(|e| ControlError::Internal(format!("no randomness for an id: {e}")))?;
    let mut s: String = b.iter().map(|x| char::from(b'0' + x % 10)).collect();
    if s.starts_with('0') {
        s.replace_range(0..1, "1");
    }
    Ok(s)
}

/// Checks a service-account name: 6 to 30 characters, lowercase letters, digits and hyphens, starting with
/// a letter, not ending with a hyphen (Google's rule).
pub fn validate_sa_name(name: &str) -> Result<()> {
    let ok = (6..=30).contains(&name.len())
        && name.as_bytes()[0].is_ascii_lowercase()
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ControlError::Invalid(format!(
            "invalid service account name {name:?}: use 6 to 30 lowercase letters, digits and hyphens, starting with a letter"
        )))
    }
}

/// Identity operations.
pub struct IdentityService {
    store: Arc<Store>,
    issuer: Arc<Issuer>,
    domain: String,
    directory: ArcSwap<Directory>,
    /// Held from reading the store to publishing the directory, so snapshots are published in the
    /// order they were read: a slower reload cannot bring back a key or user deleted meanwhile.
    reloading: std::sync::Mutex<()>,
    external: Vec<Arc<ExternalIssuer>>,
    /// Authorization codes issued and not yet expired.
    codes: authorize::Codes,
}

impl std::fmt::Debug for IdentityService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityService")
            .field("issuer", &self.issuer.url())
            .finish_non_exhaustive()
    }
}

/// The owner's credentials created at first start.
#[derive(Debug)]
pub struct Bootstrap {
    /// Owner email.
    pub email: String,
    /// Owner password (shown once, also written to the data dir).
    pub password: String,
}

impl IdentityService {
    /// The identity service over `store`, issuing tokens with `issuer`; service accounts are named
    /// `NAME@PROJECT.iam.DOMAIN`.
    pub fn new(store: Arc<Store>, issuer: Arc<Issuer>, domain: &str) -> Result<Arc<Self>> {
        Self::with_external_issuers(store, issuer, domain, Vec::new())
    }

    /// [`IdentityService::new`] that also trusts these external issuers' tokens at the gateway (see
    /// [`pier_identity::external`]; each keeps its own keys fresh).
    pub fn with_external_issuers(
        store: Arc<Store>,
        issuer: Arc<Issuer>,
        domain: &str,
        external: Vec<Arc<ExternalIssuer>>,
    ) -> Result<Arc<Self>> {
        let this = Arc::new(Self {
            store,
            issuer,
            domain: domain.to_owned(),
            directory: ArcSwap::from_pointee(Directory::default()),
            reloading: std::sync::Mutex::new(()),
            external,
            codes: authorize::Codes::default(),
        });
        this.reload()?;
        Ok(this)
    }

    /// Runs `f` on tokio's blocking pool: the async face of every call here that reads or writes the
    /// store or does CPU work (argon2, RSA key generation and signing). Async callers (the admin API,
    /// the control plane) use this rather than calling those methods on a worker.
    ///
    /// # Errors
    /// What `f` returns, or an internal error if its task could not run to its end.
    pub async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&IdentityService) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&this))
            .await
            .map_err(|e| ControlError::internal(format!("identity task failed: {e}")))?
    }

    /// The issuer.
    pub fn issuer(&self) -> &Arc<Issuer> {
        &self.issuer
    }

    /// The current directory snapshot.
    pub fn directory(&self) -> Arc<Directory> {
        self.directory.load_full()
    }

    /// The token endpoint URL.
    pub fn token_uri(&self) -> String {
        format!("{}/token", self.issuer.url())
    }

    /// Rebuilds the directory from the store: one read of every identity record, published only
    /// after every earlier reload's (so the directory never goes back to an older state).
    pub fn reload(&self) -> Result<()> {
        let _order = self
            .reloading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let snapshot = self.store.identity_snapshot()?;
        let mut d = Directory::default();
        for u in snapshot.users {
            d.users.insert(u.email, u.uid);
        }
        for sa in snapshot.service_accounts {
            d.service_accounts.insert(
                sa.email,
                SaInfo {
                    uid: sa.uid,
                    project: sa.project,
                    disabled: sa.disabled,
                },
            );
        }
        for k in snapshot.keys {
            if !k.disabled {
                d.active_keys.insert(k.id);
            }
        }
        for p in snapshot.policies {
            match serde_json::from_str::<Policy>(&p.policy) {
                Ok(mut policy) => {
                    policy.etag = p.etag;
                    d.policies.insert(p.resource, policy);
                }
                Err(e) => tracing::error!(resource = %p.resource, "unreadable policy ignored: {e}"),
            }
        }
        self.directory.store(Arc::new(d));
        Ok(())
    }

    /// Creates the owner user at first start; returns its credentials when it did.
    pub fn bootstrap(&self) -> Result<Option<Bootstrap>> {
        if !self.store.users()?.is_empty() {
            return Ok(None);
        }
        let email = format!("owner@{}", self.domain);
        let password = new_secret().map_err(|e| ControlError::Internal(e.to_string()))?;
        self.create_user(&email, &password)?;
        self.modify_policy(&Resource::Installation, None, |p| {
            p.add("roles/owner", &Member::User(email.clone()))
                .map(|_| ())
                .map_err(|e| ControlError::Internal(e.to_string()))
        })?;
        tracing::info!(owner = %email, "created the owner user");
        Ok(Some(Bootstrap { email, password }))
    }

    /// Ensures a project's default service account (`compute@PROJECT.iam.DOMAIN`) exists.
    pub fn ensure_default_service_account(&self, project: &ProjectName) -> Result<String> {
        let email = self.default_service_account(project);
        if self.store.service_account(&email)?.is_none() {
            match self.store.create_service_account(&ServiceAccountRecord {
                email: email.clone(),
                project: project.to_string(),
                name: "compute".into(),
                uid: random_digits(21)?,
                display_name: Some("Default compute service account".into()),
                disabled: false,
                created_at: String::new(),
            }) {
                Ok(()) | Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
            self.reload()?;
        }
        Ok(email)
    }

    /// The default service account's email for a project.
    pub fn default_service_account(&self, project: &ProjectName) -> String {
        format!("compute@{project}.iam.{}", self.domain)
    }

    /// Checks `who` may do `permission` on `resource`, with an error that says what is missing.
    pub fn require(
        &self,
        who: &Principal,
        permission: Permission,
        resource: &Resource,
    ) -> Result<()> {
        if self.directory.load().allows(who, permission, resource) {
            Ok(())
        } else {
            Err(ControlError::Forbidden(format!(
                "{who} lacks permission {} on {}: ask an owner to grant a role that includes it",
                permission.as_str(),
                resource.describe()
            )))
        }
    }

    /// Verifies a bearer token and checks its principal still exists; `audiences` limits what it may be
    /// addressed to.
    pub fn authenticate(
        &self,
        token: &str,
        audiences: &[String],
    ) -> Result<Arc<pier_identity::Verified>, TokenError> {
        let v = self.issuer.verify(token)?;
        tokens::check_audience(&v.claims, audiences)?;
        if !self.directory.load().live(&v.claims) {
            return Err(TokenError::Revoked);
        }
        Ok(v)
    }

    /// The audiences the admin API accepts: its own, the issuer's URL, which access tokens carry.
    /// Never the CLI's client id or a service's URL: those tokens reach services, and a public service
    /// could replay them here.
    pub fn api_audiences(&self) -> Vec<String> {
        let url = self.issuer.url().trim_end_matches('/');
        vec![url.to_owned(), format!("{url}/")]
    }

    pub(crate) fn uid_of(&self, who: &Principal) -> Result<String> {
        let d = self.directory.load();
        match who {
            Principal::User(e) => d.users.get(e).cloned(),
            Principal::ServiceAccount(e) => d.sa(e).filter(|s| !s.disabled).map(|s| s.uid.clone()),
        }
        .ok_or_else(|| ControlError::NotFound(format!("{who} does not exist or is disabled")))
    }

    /// Mints an ID token for `who` with audience `aud`.
    pub fn mint_id_token(&self, who: &Principal, aud: &str, key: Option<&str>) -> Result<String> {
        let uid = self.uid_of(who)?;
        let azp = match who {
            Principal::User(_) => CLI_CLIENT_ID.to_owned(),
            Principal::ServiceAccount(_) => uid.clone(),
        };
        self.issuer
            .mint(who, &uid, aud, &azp, key)
            .map_err(|e| ControlError::Invalid(e.to_string()))
    }

    /// An identity token for an audience the caller chose (impersonation, the refresh grant's
    /// `audience`, a key's `target_audience`, the metadata server's `identity`). Pier's own audience is
    /// refused: a token for it is an access token to the admin API, which only the account itself gets
    /// (`pier auth print-access-token`, a key's JWT-bearer grant, the metadata server's `token`).
    pub fn mint_identity_token(
        &self,
        who: &Principal,
        aud: &str,
        key: Option<&str>,
    ) -> Result<String> {
        if aud.trim_end_matches('/') == self.issuer.url().trim_end_matches('/') {
            return Err(ControlError::Invalid(format!(
                "an identity token for {aud} is an access token to Pier's admin API: ask for another audience (a service URL), or use the account's own access token"
            )));
        }
        self.mint_id_token(who, aud, key)
    }

    // ----- policies -----

    /// A resource's own policy (empty with an etag when it has none yet).
    pub fn get_policy(&self, resource: &Resource) -> Result<Policy> {
        match self.store.policy(&resource.own_key())? {
            Some(rec) => {
                let mut p: Policy = serde_json::from_str(&rec.policy)
                    .map_err(|e| ControlError::Internal(format!("stored policy: {e}")))?;
                p.etag = rec.etag;
                Ok(p)
            }
            None => Ok(Policy {
                version: 1,
                bindings: Vec::new(),
                etag: EMPTY_POLICY_ETAG.to_owned(),
            }),
        }
    }

    /// Read-modify-write of a resource's policy. With `etag`, the change is refused (409) unless the
    /// policy still has that etag.
    pub fn modify_policy(
        &self,
        resource: &Resource,
        etag: Option<&str>,
        change: impl FnOnce(&mut Policy) -> Result<()>,
    ) -> Result<Policy> {
        let key = resource.own_key();
        let mut outcome: Result<()> = Ok(());
        let rec = self.store.update_policy(&key, |current| {
            if let Some(want) = etag
                && !want.is_empty()
                && current.map(|c| c.etag.as_str()).unwrap_or(EMPTY_POLICY_ETAG) != want
            {
                return Err(StoreError::Conflict(
                    "the policy changed since it was read (etag mismatch): get it again, reapply your change and retry".into(),
                ));
            }
            let mut policy: Policy = match current {
                Some(c) => serde_json::from_str(&c.policy)
                    .map_err(|e| StoreError::Corrupt(format!("stored policy: {e}")))?,
                None => Policy::default(),
            };
            if let Err(e) = change(&mut policy) {
                outcome = Err(e);
                return Ok(None);
            }
            let normalized = policy
                .normalized()
                .map_err(|e| StoreError::Invalid(e.to_string()))?;
            let mut stored = normalized;
            stored.etag = String::new();
            serde_json::to_string(&stored)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("the policy cannot be stored: {e}")))
        })?;
        outcome?;
        self.reload()?;
        let mut p: Policy = serde_json::from_str(&rec.policy)
            .map_err(|e| ControlError::from(StoreError::Corrupt(format!("stored policy: {e}"))))?;
        p.etag = rec.etag;
        Ok(p)
    }
}

impl pier_gateway::auth::TokenVerifier for IdentityService {
    /// Pier's tokens, and at the gateway (only) those of trusted external issuers.
    fn verify(
        &self,
        token: &str,
        audiences: &[String],
    ) -> Result<Arc<pier_identity::Verified>, TokenError> {
        // Reading `iss` costs a decode: only when external issuers are configured.
        let external = &self.external;
        if !external.is_empty()
            && let Some(iss) = pier_identity::external::unverified_issuer(token)
            && iss != self.issuer.url()
            && let Some(ext) = external.iter().find(|e| e.url() == iss)
        {
            let v = ext.verify(token, std::slice::from_ref(&self.domain))?;
            tokens::check_audience(&v.claims, audiences)?;
            return Ok(v);
        }
        self.authenticate(token, audiences)
    }
}

#[cfg(test)]
mod tests;
