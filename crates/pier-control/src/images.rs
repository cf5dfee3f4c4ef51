//! Images and registry credentials: listing, pruning what no revision uses, and the credentials pulls use.

use super::*;

impl Platform {
    /// The server's images.
    pub async fn list_images(&self) -> Result<Vec<ImageView>> {
        let rows = self.db(|s| s.images()).await?;
        Ok(rows.into_iter().map(image_view).collect())
    }

    /// Forgets images no revision runs and frees their blobs, layers and roots.
    pub async fn prune_images(&self) -> Result<PruneView> {
        let _alone = self.image_ops.write().await;
        let removed = self.db(|s| s.delete_unused_images()).await?;
        // Deny on doubt: a recorded digest that does not parse stops the prune rather than leaving
        // its content off the keep list (and so freeing exactly it).
        let keep: Vec<pier_image::Digest> = self
            .db(|s| s.images())
            .await?
            .iter()
            .map(|i| {
                i.digest.parse().map_err(|_| {
                    ControlError::internal(format!(
                        "image {} has an unreadable digest {:?} in the store: nothing was pruned; delete the image record or restore the store",
                        i.name, i.digest
                    ))
                })
            })
            .collect::<Result<_>>()?;
        let report = match &self.images {
            Some(images) => images.gc(&keep).await,
            None => pier_image::GcReport::default(),
        };
        tracing::info!(
            images = removed.len(),
            blobs = report.blobs,
            bytes = report.bytes,
            "pruned images"
        );
        Ok(PruneView {
            images: removed.into_iter().map(image_view).collect(),
            blobs: report.blobs,
            bytes: report.bytes,
            unpacked: report.unpacked,
        })
    }

    /// Sets the credentials Pier pulls from `registry` with.
    pub async fn set_registry_credential(
        &self,
        registry: &str,
        req: RegistryCredentialRequest,
    ) -> Result<RegistryView> {
        let registry = registry.trim().to_ascii_lowercase();
        if registry.is_empty() || registry.contains('/') || registry.contains(char::is_whitespace) {
            return Err(ControlError::Invalid(format!(
                "registry {registry:?} must be a host with an optional port, like localhost:5000"
            )));
        }
        if req.secret.is_empty() {
            return Err(ControlError::Invalid(
                "the password or token is empty: pass it on stdin (--password-stdin)".into(),
            ));
        }
        let r = registry.clone();
        self.db(move |s| s.set_registry_credential(&r, &req.username, &req.secret))
            .await?;
        self.registries()
            .await?
            .into_iter()
            .find(|v| v.registry == registry)
            .ok_or_else(|| ControlError::Internal("credentials vanished".into()))
    }

    /// Registries with credentials.
    pub async fn registries(&self) -> Result<Vec<RegistryView>> {
        let rows = self.db(|s| s.registries()).await?;
        Ok(rows
            .into_iter()
            .map(|(registry, username, updated_at)| RegistryView {
                registry,
                username,
                updated_at,
            })
            .collect())
    }

    /// Removes a registry's credentials.
    pub async fn delete_registry_credential(&self, registry: &str) -> Result<()> {
        let r = registry.trim().to_ascii_lowercase();
        self.db(move |s| s.delete_registry_credential(&r)).await
    }
}

fn image_view(i: pier_store::ImageRecord) -> ImageView {
    ImageView {
        digest: i.digest,
        name: i.name,
        size: i.size,
        pulled_at: i.pulled_at,
        used_by: i.used_by,
    }
}
