//! Users, service accounts and their keys: creating, listing, disabling and deleting them. Every change
//! reloads the directory, so the gateway sees it at once.

use super::*;

impl IdentityService {
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
        let uid = random_digits(21)?;
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

    pub(crate) fn sa_view(r: ServiceAccountRecord) -> ServiceAccountView {
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
            uid: random_digits(21)?,
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
            .ok_or_else(|| no_such_account(&email))
    }

    /// The resource a service account is, for permission checks.
    /// Answered from the directory snapshot (no store read), so permission checks stay off the store.
    pub fn sa_resource(&self, email: &str) -> Result<Resource> {
        let email = normalize_email(email).map_err(|e| ControlError::Invalid(e.to_string()))?;
        let directory = self.directory();
        let sa = directory
            .service_accounts
            .get(&email)
            .ok_or_else(|| no_such_account(&email))?;
        Ok(Resource::ServiceAccount(sa.project.clone(), email))
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
}

/// A service account that does not exist, and where to see those that do.
fn no_such_account(email: &str) -> ControlError {
    ControlError::NotFound(format!(
        "service account {email} does not exist: `pier iam service-accounts list` shows them"
    ))
}
