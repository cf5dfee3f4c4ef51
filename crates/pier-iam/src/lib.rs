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

mod signin;

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

/// What the token endpoint answers.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct TokenResponse {
    /// An access token (a Pier JWT the admin API accepts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    /// An ID token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// A refresh token (user sign-in only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Seconds until the tokens expire.
    pub expires_in: u64,
    /// Always `Bearer`.
    pub token_type: &'static str,
}

/// Why a grant failed, in OAuth's shape.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GrantError {
    /// `invalid_grant`, `invalid_request`, `unsupported_grant_type`.
    pub error: &'static str,
    /// What was wrong.
    pub error_description: String,
}

fn invalid_grant(why: impl Into<String>) -> GrantError {
    GrantError {
        error: "invalid_grant",
        error_description: why.into(),
    }
}

fn random_digits(n: usize) -> String {
    let mut b = vec![0u8; n];
    let _ = getrandom::fill(&mut b);
    let mut s: String = b.iter().map(|x| char::from(b'0' + x % 10)).collect();
    if s.starts_with('0') {
        s.replace_range(0..1, "1");
    }
    s
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
    external: ArcSwap<Vec<Arc<ExternalIssuer>>>,
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
        let this = Arc::new(Self {
            store,
            issuer,
            domain: domain.to_owned(),
            directory: ArcSwap::from_pointee(Directory::default()),
            reloading: std::sync::Mutex::new(()),
            external: ArcSwap::from_pointee(Vec::new()),
        });
        this.reload()?;
        Ok(this)
    }

    /// The issuer.
    pub fn issuer(&self) -> &Arc<Issuer> {
        &self.issuer
    }

    /// Trusts these external issuers' tokens at the gateway (see [`pier_identity::external`]).
    pub fn set_external_issuers(&self, issuers: Vec<Arc<ExternalIssuer>>) {
        self.external.store(Arc::new(issuers));
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
                uid: random_digits(21),
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

    fn uid_of(&self, who: &Principal) -> Result<String> {
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

    // ----- the token endpoint -----

    /// `grant_type=password`: a user signs in; answers a refresh token and an ID token for the CLI.
    pub fn grant_password(&self, email: &str, password: &str) -> Result<TokenResponse, GrantError> {
        let email = normalize_email(email).map_err(|e| invalid_grant(e.to_string()))?;
        if let Some(wait) = signin::must_wait(&email) {
            return Err(invalid_grant(format!(
                "too many wrong passwords for {email}: wait {}s, then try again",
                wait.as_secs().max(1)
            )));
        }
        let user = self
            .store
            .user(&email)
            .map_err(|e| invalid_grant(e.to_string()))?;
        // Same answer, in the same time, for unknown users and wrong passwords.
        let ok = pier_identity::passwords::verify_or_pretend(
            password,
            user.as_ref().map(|u| u.password_hash.as_str()),
        )
        .map_err(|_| GrantError {
            error: "temporarily_unavailable",
            error_description: "the server is busy checking other sign-ins: retry in a few seconds"
                .into(),
        })?;
        if !ok {
            signin::failed(&email);
            return Err(invalid_grant("wrong email or password"));
        }
        signin::succeeded(&email);
        let refresh = new_secret().map_err(|e| invalid_grant(e.to_string()))?;
        self.store
            .create_session(&secret_digest(&refresh), &email)
            .map_err(|e| invalid_grant(e.to_string()))?;
        let mut resp = self.grant_refresh(&refresh, None)?;
        resp.refresh_token = Some(refresh);
        Ok(resp)
    }

    /// `grant_type=refresh_token`: fresh tokens for a signed-in user; `audience` (a Pier extension)
    /// chooses the ID token's audience.
    pub fn grant_refresh(
        &self,
        refresh: &str,
        audience: Option<&str>,
    ) -> Result<TokenResponse, GrantError> {
        let email = self
            .store
            .session(&secret_digest(refresh))
            .map_err(|e| invalid_grant(e.to_string()))?
            .ok_or_else(|| {
                invalid_grant(
                    "the refresh token is unknown or revoked: sign in again with `pier auth login`",
                )
            })?;
        let who = Principal::User(email);
        let id = self
            .mint_identity_token(&who, audience.unwrap_or(CLI_CLIENT_ID), None)
            .map_err(|e| invalid_grant(e.to_string()))?;
        let access = self
            .mint_id_token(&who, self.issuer.url(), None)
            .map_err(|e| invalid_grant(e.to_string()))?;
        Ok(TokenResponse {
            access_token: Some(access),
            id_token: Some(id),
            refresh_token: None,
            expires_in: tokens::TOKEN_LIFETIME.as_secs() - 1,
            token_type: "Bearer",
        })
    }

    /// Ends a session.
    pub fn revoke(&self, refresh: &str) -> Result<()> {
        Ok(self.store.delete_session(&secret_digest(refresh))?)
    }

    /// `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`: a service account proves itself with a
    /// JWT signed by one of its keys. With `target_audience` the answer is an ID token, else an access
    /// token.
    pub fn grant_jwt_bearer(&self, assertion: &str) -> Result<TokenResponse, GrantError> {
        let kid = tokens::header_kid(assertion).map_err(|e| invalid_grant(e.to_string()))?;
        let key = self
            .store
            .key(&kid)
            .map_err(|e| invalid_grant(e.to_string()))?
            .ok_or_else(|| invalid_grant(format!("key {kid} does not exist (deleted?)")))?;
        if key.disabled {
            return Err(invalid_grant(format!("key {kid} is disabled")));
        }
        let dk = DecodingKey::from_rsa_raw_components(&key.n, &key.e);
        let token_uri = self.token_uri();
        let claims = verify_assertion(assertion, &dk, &[GOOGLE_TOKEN_URI, &token_uri])
            .map_err(|e| invalid_grant(format!("invalid assertion: {e}")))?;
        if claims.iss != key.email || claims.sub.as_ref().is_some_and(|s| *s != key.email) {
            return Err(invalid_grant(
                "the assertion's iss is not the service account that owns the key",
            ));
        }
        let who = Principal::ServiceAccount(key.email.clone());
        let (aud, id) = match &claims.target_audience {
            Some(aud) => (aud.clone(), true),
            None => (self.issuer.url().to_owned(), false),
        };
        let token = if id {
            self.mint_identity_token(&who, &aud, Some(&kid))
        } else {
            self.mint_id_token(&who, &aud, Some(&kid))
        }
        .map_err(|e| invalid_grant(e.to_string()))?;
        Ok(if id {
            TokenResponse {
                id_token: Some(token),
                expires_in: tokens::TOKEN_LIFETIME.as_secs() - 1,
                token_type: "Bearer",
                ..Default::default()
            }
        } else {
            TokenResponse {
                access_token: Some(token),
                expires_in: tokens::TOKEN_LIFETIME.as_secs() - 1,
                token_type: "Bearer",
                ..Default::default()
            }
        })
    }

    // ----- users -----

    /// Creates a user.
    pub fn create_user(&self, email: &str, password: &str) -> Result<UserView> {
        let email = normalize_email(email).map_err(|e| ControlError::Invalid(e.to_string()))?;
        if email.ends_with(&format!(".iam.{}", self.domain)) {
            return Err(ControlError::Invalid(format!(
                "{email} is in the service-account namespace: pick another email"
            )));
        }
        let hash = hash_password(password).map_err(|e| ControlError::Invalid(e.to_string()))?;
        let uid = random_digits(21);
        self.store.create_user(&UserRecord {
            email: email.clone(),
            uid: uid.clone(),
            password_hash: hash,
            created_at: String::new(),
        })?;
        self.reload()?;
        Ok(UserView {
            email,
            unique_id: uid,
        })
    }

    /// Lists users.
    pub fn users(&self) -> Result<Vec<UserView>> {
        Ok(self
            .store
            .users()?
            .into_iter()
            .map(|u| UserView {
                email: u.email,
                unique_id: u.uid,
            })
            .collect())
    }

    /// Deletes a user: their tokens stop working at once.
    pub fn delete_user(&self, email: &str) -> Result<()> {
        let email = normalize_email(email).map_err(|e| ControlError::Invalid(e.to_string()))?;
        self.store.delete_user(&email)?;
        self.reload()
    }

    // ----- service accounts -----

    fn sa_view(r: ServiceAccountRecord) -> ServiceAccountView {
        ServiceAccountView {
            email: r.email,
            name: r.name,
            project: r.project,
            unique_id: r.uid,
            display_name: r.display_name,
            disabled: r.disabled,
        }
    }

    /// Creates a service account in `project`.
    pub fn create_service_account(
        &self,
        project: &ProjectName,
        name: &str,
        display_name: Option<String>,
    ) -> Result<ServiceAccountView> {
        validate_sa_name(name)?;
        let email = format!("{name}@{project}.iam.{}", self.domain);
        let rec = ServiceAccountRecord {
            email,
            project: project.to_string(),
            name: name.to_owned(),
            uid: random_digits(21),
            display_name,
            disabled: false,
            created_at: String::new(),
        };
        self.store.create_service_account(&rec)?;
        self.reload()?;
        Ok(Self::sa_view(rec))
    }

    /// One service account, with its project.
    pub fn service_account(&self, email: &str) -> Result<ServiceAccountView> {
        let email = normalize_email(email).map_err(|e| ControlError::Invalid(e.to_string()))?;
        self.store
            .service_account(&email)?
            .map(Self::sa_view)
            .ok_or_else(|| {
                ControlError::NotFound(format!(
                    "service account {email} does not exist: `pier iam service-accounts list` shows them"
                ))
            })
    }

    /// The resource a service account is, for permission checks.
    pub fn sa_resource(&self, email: &str) -> Result<Resource> {
        let sa = self.service_account(email)?;
        Ok(Resource::ServiceAccount(sa.project, sa.email))
    }

    /// Service accounts of a project.
    pub fn service_accounts(&self, project: &ProjectName) -> Result<Vec<ServiceAccountView>> {
        Ok(self
            .store
            .service_accounts(Some(project.as_str()))?
            .into_iter()
            .map(Self::sa_view)
            .collect())
    }

    /// Disables or enables a service account.
    pub fn set_service_account_disabled(&self, email: &str, disabled: bool) -> Result<()> {
        let email = self.service_account(email)?.email;
        self.store.set_service_account_disabled(&email, disabled)?;
        self.reload()
    }

    /// Deletes a service account: its tokens stop working at once.
    pub fn delete_service_account(&self, email: &str) -> Result<()> {
        let email = self.service_account(email)?.email;
        self.store.delete_service_account(&email)?;
        self.issuer.flush();
        self.reload()
    }

    /// Creates a key; the private half exists only in the returned key file.
    pub fn create_key(&self, email: &str) -> Result<KeyFile> {
        let sa = self.service_account(email)?;
        if sa.disabled {
            return Err(ControlError::Conflict(format!(
                "service account {} is disabled: enable it first",
                sa.email
            )));
        }
        let (pem, n, e) = pier_identity::keys::generate_rsa()
            .map_err(|e| ControlError::Internal(e.to_string()))?;
        let mut id = [0u8; 20];
        getrandom::fill(&mut id)
            .map_err(|e| ControlError::Internal(format!("no randomness for a key id: {e}")))?;
        let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        self.store.create_key(&KeyRecord {
            id: id.clone(),
            email: sa.email.clone(),
            n,
            e,
            disabled: false,
            created_at: String::new(),
        })?;
        self.reload()?;
        Ok(KeyFile::new(
            &sa.project,
            &id,
            &pem,
            &sa.email,
            &sa.unique_id,
            self.issuer.url(),
        ))
    }

    /// Keys of a service account.
    pub fn keys(&self, email: &str) -> Result<Vec<KeyView>> {
        let sa = self.service_account(email)?;
        Ok(self
            .store
            .keys(Some(&sa.email))?
            .into_iter()
            .map(|k| KeyView {
                id: k.id,
                service_account: k.email,
                disabled: k.disabled,
                created_at: k.created_at,
            })
            .collect())
    }

    /// Disables or enables a key; tokens obtained with it stop (or start again) working at once.
    pub fn set_key_disabled(&self, email: &str, id: &str, disabled: bool) -> Result<()> {
        let sa = self.service_account(email)?;
        self.store.set_key_disabled(&sa.email, id, disabled)?;
        self.issuer.flush();
        self.reload()
    }

    /// Deletes a key; tokens obtained with it stop working at once.
    pub fn delete_key(&self, email: &str, id: &str) -> Result<()> {
        let sa = self.service_account(email)?;
        self.store.delete_key(&sa.email, id)?;
        self.issuer.flush();
        self.reload()
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
            Ok(Some(serde_json::to_string(&stored).unwrap_or_default()))
        })?;
        outcome?;
        self.reload()?;
        let mut p: Policy = serde_json::from_str(&rec.policy).unwrap_or_default();
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
        let external = self.external.load();
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
