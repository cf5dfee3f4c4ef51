//! IAM policies of services, projects, service accounts and the installation: read, replaced
//! (etag-checked), and one binding at a time; routes are republished, since invokers are part of them.

use super::*;

impl Platform {
    /// A resource's IAM policy.
    pub async fn get_iam_policy(&self, resource: &Resource) -> Result<pier_identity::Policy> {
        let resource = resource.clone();
        self.identity
            .blocking(move |id| id.get_policy(&resource))
            .await
    }

    /// Replaces a resource's IAM policy; refused (409) if `policy.etag` is set and stale.
    pub async fn set_iam_policy(
        self: &Arc<Self>,
        resource: &Resource,
        policy: pier_identity::Policy,
    ) -> Result<pier_identity::Policy> {
        let normalized = policy
            .normalized()
            .map_err(|e| ControlError::Invalid(e.to_string()))?;
        let etag = policy.etag.clone();
        let resource = resource.clone();
        let out = self
            .identity
            .blocking(move |id| {
                id.modify_policy(&resource, Some(&etag), |p| {
                    p.bindings = normalized.bindings.clone();
                    Ok(())
                })
            })
            .await?;
        self.publish_routes().await?;
        self.changed();
        Ok(out)
    }

    /// Grants (`add`) or revokes a role for a member on a resource.
    pub async fn change_binding(
        self: &Arc<Self>,
        resource: &Resource,
        member: &str,
        role: &str,
        add: bool,
    ) -> Result<pier_identity::Policy> {
        let member: Member = member
            .parse()
            .map_err(|e: pier_identity::IdentityError| ControlError::Invalid(e.to_string()))?;
        if pier_identity::iam::role(role).is_none() {
            return Err(ControlError::Invalid(format!(
                "unknown role {role:?}: use one of {}",
                pier_identity::iam::ROLES
                    .iter()
                    .map(|r| r.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let (resource, role) = (resource.clone(), role.to_owned());
        let out = self
            .identity
            .blocking(move |id| {
                id.modify_policy(&resource, None, |p| {
                    if add {
                        p.add(&role, &member)
                            .map(|_| ())
                            .map_err(|e| ControlError::Invalid(e.to_string()))
                    } else if p.remove(&role, &member) {
                        Ok(())
                    } else {
                        Err(ControlError::NotFound(format!(
                            "{member} has no binding to {role} here"
                        )))
                    }
                })
            })
            .await?;
        self.publish_routes().await?;
        self.changed();
        Ok(out)
    }
}
