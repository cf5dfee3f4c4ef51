//! Hosting: sites, their versions, channels and releases. A deploy is three calls, as Firebase
//! Hosting's: a version is created with its `firebase.json` hosting entry and the digest of every file
//! (the entry is compiled here, so a rule that cannot be served is refused before anything is uploaded;
//! the answer lists the digests this project has not uploaded), the missing files are uploaded (each
//! checked against its digest), then a release makes a channel serve the version, which the store
//! allows only once every file is there. Routes are republished after every release, so a channel
//! switches whole: a request sees the old version or the new one, never a mix.
//!
//! Access rules (the handlers check them): reading needs `run.services.get` on the project, changing
//! `run.services.update`; a site is public (as Firebase's), so creating one needs
//! `run.services.setIamPolicy`; a site calls services as its service account, so naming one needs
//! `iam.serviceAccounts.actAs` on it.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pier_hosting::FileStore;
use pier_model::hosting::{
    ChannelView, CreateSiteVersionRequest, CreatedSiteVersion, DEFAULT_CHANNEL_TTL_SECS,
    MAX_CHANNEL_TTL_SECS, ReleaseView, SiteView, UploadedFile,
};
use pier_model::{HostKind, ProjectName, ServiceName};
use pier_store::{LIVE, NewRelease, SiteChannelRecord, SiteReleaseRecord};

use crate::{ControlError, Platform, Result, project_hash};

pub(crate) mod pins;
pub(crate) mod routes;

/// What the control plane needs for hosting.
#[derive(Clone, Debug)]
pub struct HostingConfig {
    /// Where site files are stored; `None`: this control plane hosts no sites (tests of other parts).
    pub files: Option<FileStore>,
    /// Uploads hashed and compressed at once (each may hold a file of up to 256 MiB).
    pub uploads: std::sync::Arc<tokio::sync::Semaphore>,
    /// The edge cache sites' rewrites are answered from.
    pub cache: std::sync::Arc<pier_cache::EdgeCache>,
}

impl Default for HostingConfig {
    fn default() -> Self {
        Self::new(None)
    }
}

impl HostingConfig {
    /// Hosting with files in `files` (none: no hosting), two uploads processed at a time.
    pub fn new(files: Option<FileStore>) -> Self {
        Self {
            files,
            uploads: std::sync::Arc::new(tokio::sync::Semaphore::new(2)),
            cache: pier_cache::EdgeCache::new(64 << 20),
        }
    }

    /// The same, with `cache` as the edge cache.
    pub fn with_cache(mut self, cache: std::sync::Arc<pier_cache::EdgeCache>) -> Self {
        self.cache = cache;
        self
    }
}

/// The most files a version may have.
const MAX_FILES: usize = 100_000;

/// Site and channel names follow service names (lowercase letters, digits, single hyphens), so
/// `SITE--CHANNEL` in a preview's host is never ambiguous.
fn check_name(what: &str, name: &str) -> Result<ServiceName> {
    name.parse().map_err(|_: pier_model::NameError| {
        ControlError::Invalid(format!(
            "{what} name {name:?} is not valid: use lowercase letters, digits and single hyphens, starting with a letter (as pr-42)"
        ))
    })
}

/// A file path of a version: absolute, normalized, printable.
fn check_path(path: &str) -> Result<()> {
    let ok = path.starts_with('/')
        && path.len() <= 1024
        && !path.ends_with('/')
        && !path.chars().any(|c| c.is_control())
        && path[1..]
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..");
    if ok {
        Ok(())
    } else {
        Err(ControlError::Invalid(format!(
            "file path {path:?} is not a file of a site: paths start with /, have no empty, `.` or `..` segments and no control characters"
        )))
    }
}

/// Cloud CDN's invalidation paths: `/x/*` (`*` only as the last segment) or an exact path.
fn check_cache_path(path: &str) -> Result<()> {
    if !path.starts_with('/') || path.strip_suffix("/*").unwrap_or(path).contains('*') {
        return Err(ControlError::Invalid(format!(
            "--path {path:?}: give a path starting with /, exact or ending with /* (Cloud CDN's rules)"
        )));
    }
    Ok(())
}

fn rfc3339(unix: i64) -> String {
    crate::domains::rfc3339(UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64))
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A preview's life, checked (Firebase: at most 30 days).
fn ttl(seconds: Option<u64>, channel: &str) -> Result<Option<i64>> {
    match seconds {
        None => Ok(None),
        Some(_) if channel == LIVE => Err(ControlError::Invalid(
            "the live channel does not expire: --expires is for preview channels".into(),
        )),
        Some(0) => Err(ControlError::Invalid(
            "a channel's life must be longer than 0 seconds".into(),
        )),
        Some(s) if s > MAX_CHANNEL_TTL_SECS => Err(ControlError::Invalid(format!(
            "a preview channel lives at most 30 days ({MAX_CHANNEL_TTL_SECS} s); asked for {s} s"
        ))),
        Some(s) => Ok(Some(now_unix() + s as i64)),
    }
}

impl Platform {
    /// The edge cache (sites' rewrites, services with `--cache`).
    pub fn edge_cache(&self) -> &std::sync::Arc<pier_cache::EdgeCache> {
        &self.hosting.cache
    }

    fn site_files(&self) -> Result<&FileStore> {
        self.hosting
            .files
            .as_ref()
            .ok_or_else(|| ControlError::internal("this server was built without hosting"))
    }

    /// A channel's host: the site's own for `live`, `SITE--CHANNEL` otherwise, with the site kind's hash.
    pub(crate) fn channel_host(&self, project_hash: &str, site: &str, channel: &str) -> String {
        if channel == LIVE {
            self.scheme.host(HostKind::Site, site, project_hash)
        } else {
            self.scheme
                .host(HostKind::Site, &format!("{site}--{channel}"), project_hash)
        }
    }

    async fn channel_url(
        &self,
        project: &ProjectName,
        site: &str,
        channel: &str,
    ) -> Result<String> {
        let p = project.clone();
        let hash = self
            .db(move |s| s.ensure_project(&p, project_hash))
            .await?
            .hash;
        Ok(self.scheme.url(&self.channel_host(&hash, site, channel)))
    }

    /// Whether the site exists (for the handlers' access rules).
    pub async fn site_exists(&self, project: &ProjectName, site: &str) -> Result<bool> {
        let (p, s) = (project.clone(), site.to_owned());
        Ok(self.db(move |st| Ok(st.site(&p, &s).ok())).await?.is_some())
    }

    /// The account a site would call services as after a deploy naming `named`.
    pub async fn site_account(
        &self,
        project: &ProjectName,
        site: &str,
        named: Option<&str>,
    ) -> Result<String> {
        if named.is_none() {
            let (p, s) = (project.clone(), site.to_owned());
            if let Some(existing) = self.db(move |st| Ok(st.site(&p, &s).ok())).await? {
                return Ok(existing.service_account);
            }
        }
        self.acting_account(project, named, "--service-account")
            .await
    }

    /// Creates a version (and the site, on its first): checks the hosting entry and the file list, and
    /// answers which files to upload.
    pub async fn create_site_version(
        &self,
        project: &ProjectName,
        site: &str,
        req: CreateSiteVersionRequest,
        by: &str,
        may_create: bool,
    ) -> Result<CreatedSiteVersion> {
        self.site_files()?;
        check_name("site", site)?;
        let rules = pier_hosting::compile(&req.config).map_err(|f| {
            ControlError::Invalid(format!("firebase.json hosting{}: {}", f.pointer, f.reason))
        })?;
        if req.files.len() > MAX_FILES {
            return Err(ControlError::Invalid(format!(
                "a version holds at most {MAX_FILES} files; this one has {}",
                req.files.len()
            )));
        }
        for (path, digest) in &req.files {
            check_path(path)?;
            if !pier_hosting::files::is_digest(digest) {
                return Err(ControlError::Invalid(format!(
                    "the digest of {path} is not a SHA-256 (64 lowercase hex characters)"
                )));
            }
        }
        // Every service a rewrite names must exist now (as Firebase checks at deploy).
        for (service, _) in rules.run_services() {
            let name: ServiceName = service.parse().map_err(|e| {
                ControlError::Invalid(format!(
                    "firebase.json rewrites: serviceId {service:?}: {e}"
                ))
            })?;
            let (p, n) = (project.clone(), name.clone());
            if self.db(move |s| s.service(&p, &n)).await?.is_none() {
                return Err(ControlError::Invalid(format!(
                    "firebase.json rewrites to service {service}, which does not exist in project {project}: deploy it first (`pier deploy {service} …`)"
                )));
            }
        }
        let account = self
            .site_account(project, site, req.service_account.as_deref())
            .await?;
        let default = account.clone();
        let config = serde_json::to_string(&req.config)
            .map_err(|e| ControlError::internal(format!("hosting entry: {e}")))?;
        let (p, s, by) = (project.clone(), site.to_owned(), by.to_owned());
        let named = req.service_account.clone();
        let files = self.site_files()?.clone();
        self.db(move |st| {
            // The caller's rights were checked for a site that existed (or not): a site deleted since
            // is not made again without the checks of a creation.
            if !may_create && st.site(&p, &s).is_err() {
                return Err(pier_store::StoreError::Conflict(format!(
                    "site {s} was deleted meanwhile: deploy again to create it"
                )));
            }
            st.ensure_site(&p, &s, named.as_deref(), &default)?;
            let version = st.create_site_version(&p, &s, &config, &req.files, &by)?;
            let digests: Vec<&str> = {
                let mut d: Vec<&str> = req.files.values().map(String::as_str).collect();
                d.sort_unstable();
                d.dedup();
                d
            };
            let mut missing = st.missing_site_files(&p, &digests)?;
            // A file recorded but gone from disk (a crash between the two) is asked for again.
            for d in digests {
                if files.stat(d).is_none() && !missing.iter().any(|m| m == d) {
                    missing.push(d.to_owned());
                }
            }
            Ok(CreatedSiteVersion { version, missing })
        })
        .await
    }

    /// Stores one uploaded file (`path` only tells whether it is worth compressing).
    pub async fn upload_site_file(
        &self,
        project: &ProjectName,
        site: &str,
        digest: &str,
        path: Option<&str>,
        content: bytes::Bytes,
    ) -> Result<UploadedFile> {
        let files = self.site_files()?.clone();
        let (p, st, d) = (project.clone(), site.to_owned(), digest.to_owned());
        if !self.db(move |s| s.site_wants_file(&p, &st, &d)).await? {
            return Err(ControlError::Invalid(format!(
                "no version of site {site} waiting to be released names the file {digest}: create the version first (`pier hosting deploy` does both)"
            )));
        }
        // Compression is CPU-bound: a few uploads at a time.
        let _permit = self
            .hosting
            .uploads
            .acquire()
            .await
            .map_err(|_| ControlError::internal("the server is shutting down"))?;
        let (d, name) = (digest.to_owned(), path.unwrap_or("").to_owned());
        let stored = tokio::task::spawn_blocking(move || files.put(&d, &content, &name))
            .await
            .map_err(|e| ControlError::internal(format!("storing a file failed: {e}")))?
            .map_err(|e| match e {
                pier_hosting::files::FileError::Io(io) => {
                    ControlError::internal(format!("storing a file failed: {io}"))
                }
                other => ControlError::Invalid(other.to_string()),
            })?;
        let (p, d) = (project.clone(), digest.to_owned());
        self.db(move |s| s.add_site_file(&p, &d, stored.size))
            .await?;
        Ok(UploadedFile {
            digest: digest.to_owned(),
            size: stored.size,
            gzip_size: stored.gzip,
            brotli_size: stored.brotli,
        })
    }

    async fn release_view(
        &self,
        project: &ProjectName,
        site: &str,
        r: SiteReleaseRecord,
    ) -> Result<ReleaseView> {
        let url = self.channel_url(project, site, &r.channel).await?;
        Ok(ReleaseView {
            channel: r.channel,
            seq: r.seq,
            version: r.version,
            kind: r.kind,
            message: r.message,
            create_time: r.created_at,
            created_by: r.created_by,
            url,
        })
    }

    /// The expiry to record for a release to `channel`: the asked life, or 7 days for a new preview.
    async fn release_expiry(
        &self,
        project: &ProjectName,
        site: &str,
        channel: &str,
        ttl_seconds: Option<u64>,
    ) -> Result<Option<i64>> {
        let asked = ttl(ttl_seconds, channel)?;
        if asked.is_some() || channel == LIVE {
            return Ok(asked);
        }
        // A channel that exists and has not expired keeps its expiry; a new or expired one gets 7 days.
        let (p, s) = (project.clone(), site.to_owned());
        let channels = self
            .db(move |st| st.site_channels(Some(&p), Some(&s)))
            .await?;
        let live_on = channels
            .iter()
            .find(|c| c.name == channel)
            .is_some_and(|c| c.expires_at.is_none_or(|e| e > now_unix()));
        Ok((!live_on).then(|| now_unix() + DEFAULT_CHANNEL_TTL_SECS as i64))
    }

    /// Refuses a channel whose host would not fit one DNS label (63 characters).
    async fn check_channel_host(
        &self,
        project: &ProjectName,
        site: &str,
        channel: &str,
    ) -> Result<()> {
        let url = self.channel_url(project, site, channel).await?;
        let host = url.trim_start_matches("https://");
        let label = host.split('.').next().unwrap_or(host);
        if label.len() > 63 {
            return Err(ControlError::Invalid(format!(
                "the host {label} of channel {channel} of site {site} is longer than a DNS label (63 characters): choose a shorter channel name"
            )));
        }
        Ok(())
    }

    /// Makes `channel` serve `version`, then republishes routes.
    pub async fn release_site(
        self: &std::sync::Arc<Self>,
        project: &ProjectName,
        site: &str,
        channel: &str,
        req: pier_model::hosting::ReleaseRequest,
        by: &str,
    ) -> Result<ReleaseView> {
        check_name("channel", channel)?;
        self.check_channel_host(project, site, channel).await?;
        let expires_at = self
            .release_expiry(project, site, channel, req.ttl_seconds)
            .await?;
        self.pin_version(project, site, req.version).await?;
        let (p, s, c, by) = (
            project.clone(),
            site.to_owned(),
            channel.to_owned(),
            by.to_owned(),
        );
        let release = {
            let _guard = self.publish.lock().await;
            let r = self
                .db(move |st| {
                    st.release_site_version(&NewRelease {
                        project: &p,
                        site: &s,
                        channel: &c,
                        version: req.version,
                        kind: "DEPLOY",
                        message: &req.message,
                        by: &by,
                        expires_at,
                    })
                })
                .await?;
            self.publish_locked().await?;
            r
        };
        self.changed();
        self.prune_pin_tags(project).await;
        self.release_view(project, site, release).await
    }

    /// Makes `live` serve its previous version again.
    pub async fn rollback_site(
        self: &std::sync::Arc<Self>,
        project: &ProjectName,
        site: &str,
        by: &str,
    ) -> Result<ReleaseView> {
        let (p, s) = (project.clone(), site.to_owned());
        let to = self.db(move |st| st.rollback_target(&p, &s)).await?;
        // The version's pinned revisions get their tags back before it serves again.
        self.pin_version(project, site, to).await?;
        let (p, s, by) = (project.clone(), site.to_owned(), by.to_owned());
        let release = {
            let _guard = self.publish.lock().await;
            let r = self.db(move |st| st.rollback_site(&p, &s, to, &by)).await?;
            self.publish_locked().await?;
            r
        };
        self.changed();
        self.prune_pin_tags(project).await;
        self.release_view(project, site, release).await
    }

    /// Serves on `to` what `from` serves (site and channel each).
    pub async fn clone_site(
        self: &std::sync::Arc<Self>,
        project: &ProjectName,
        from: (&str, &str),
        to: (&str, &str),
        ttl_seconds: Option<u64>,
        by: &str,
    ) -> Result<ReleaseView> {
        check_name("channel", to.1)?;
        self.check_channel_host(project, to.0, to.1).await?;
        if from == to {
            return Err(ControlError::Invalid(format!(
                "{}:{} is both the source and the target of the clone",
                from.0, from.1
            )));
        }
        let expires_at = self
            .release_expiry(project, to.0, to.1, ttl_seconds)
            .await?;
        let p = project.clone();
        let (fs, fc, ts, tc, by) = (
            from.0.to_owned(),
            from.1.to_owned(),
            to.0.to_owned(),
            to.1.to_owned(),
            by.to_owned(),
        );
        let release = {
            let _guard = self.publish.lock().await;
            let r = self
                .db(move |st| st.clone_site_release(&p, (&fs, &fc), (&ts, &tc), &by, expires_at))
                .await?;
            self.publish_locked().await?;
            r
        };
        self.changed();
        // A copy pins what the source pinned: their tags are there while the source serves it.
        self.pin_version(project, to.0, release.version).await?;
        self.prune_pin_tags(project).await;
        self.release_view(project, to.0, release).await
    }

    /// A channel's releases, newest first.
    pub async fn site_releases(
        &self,
        project: &ProjectName,
        site: &str,
        channel: &str,
    ) -> Result<Vec<ReleaseView>> {
        let (p, s, c) = (project.clone(), site.to_owned(), channel.to_owned());
        let releases = self
            .db(move |st| {
                st.site(&p, &s)?;
                if !st
                    .site_channels(Some(&p), Some(&s))?
                    .iter()
                    .any(|ch| ch.name == c)
                {
                    return Err(pier_store::StoreError::NotFound(format!(
                        "site {s} has no channel {c}: `pier hosting channel list --site {s}` shows them"
                    )));
                }
                st.site_releases(&p, &s, &c)
            })
            .await?;
        let mut out = Vec::new();
        for r in releases {
            out.push(self.release_view(project, site, r).await?);
        }
        Ok(out)
    }

    fn channel_view(&self, hash: &str, c: SiteChannelRecord) -> ChannelView {
        ChannelView {
            url: self.scheme.url(&self.channel_host(hash, &c.site, &c.name)),
            name: c.name,
            version: c.version,
            expire_time: c.expires_at.map(rfc3339),
            release_time: c.released_at,
        }
    }

    /// The project's sites with their channels.
    pub async fn list_sites(&self, project: &ProjectName) -> Result<Vec<SiteView>> {
        let p = project.clone();
        let (hash, sites, channels) = self
            .db(move |st| {
                Ok((
                    st.ensure_project(&p, project_hash)?.hash,
                    st.sites(Some(&p))?,
                    st.site_channels(Some(&p), None)?,
                ))
            })
            .await?;
        let mut by_site: BTreeMap<String, Vec<ChannelView>> = BTreeMap::new();
        for c in channels {
            by_site
                .entry(c.site.clone())
                .or_default()
                .push(self.channel_view(&hash, c));
        }
        Ok(sites
            .into_iter()
            .map(|s| SiteView {
                url: self.scheme.url(&self.channel_host(&hash, &s.name, LIVE)),
                channels: by_site.remove(&s.name).unwrap_or_default(),
                project: s.project.to_string(),
                service_account: s.service_account,
                create_time: s.created_at,
                name: s.name,
            })
            .collect())
    }

    /// One site.
    pub async fn get_site(&self, project: &ProjectName, site: &str) -> Result<SiteView> {
        self.list_sites(project)
            .await?
            .into_iter()
            .find(|s| s.name == site)
            .ok_or_else(|| {
                ControlError::NotFound(format!(
                    "site {site} does not exist in project {project}: `pier hosting sites list` shows them"
                ))
            })
    }

    /// Deletes a site (its routes go at once) or one preview channel.
    pub async fn delete_site(
        self: &std::sync::Arc<Self>,
        project: &ProjectName,
        site: &str,
        channel: Option<&str>,
    ) -> Result<()> {
        let (p, s, c) = (project.clone(), site.to_owned(), channel.map(str::to_owned));
        {
            let _guard = self.publish.lock().await;
            self.db(move |st| match c {
                Some(c) => st.delete_site_channel(&p, &s, &c),
                None => st.delete_site(&p, &s),
            })
            .await?;
            self.publish_locked().await?;
        }
        self.changed();
        self.prune_pin_tags(project).await;
        Ok(())
    }

    /// Drops what the edge cache holds for a site's channels under `path` (`/x/*` or an exact path; the
    /// query is ignored).
    pub async fn invalidate_site_cache(
        &self,
        project: &ProjectName,
        site: &str,
        path: &str,
    ) -> Result<()> {
        check_cache_path(path)?;
        if !self.site_exists(project, site).await? {
            return Err(ControlError::NotFound(format!(
                "site {site} does not exist in project {project}"
            )));
        }
        self.hosting
            .cache
            .invalidate(&routes::site_scope_prefix(project, site), path);
        Ok(())
    }

    /// Drops what the edge cache holds for a service's URLs under `path`.
    pub async fn invalidate_service_cache(
        &self,
        project: &ProjectName,
        service: &ServiceName,
        path: &str,
    ) -> Result<()> {
        check_cache_path(path)?;
        let (p, n) = (project.clone(), service.clone());
        let svc = self
            .db(move |st| st.service(&p, &n))
            .await?
            .ok_or_else(|| {
                ControlError::NotFound(format!(
                    "service {service} does not exist in project {project}"
                ))
            })?;
        if svc.cache.is_none() {
            return Err(ControlError::Invalid(format!(
                "service {service} has no edge cache: turn it on with `pier services update {service} --cache origin-headers`"
            )));
        }
        self.hosting
            .cache
            .invalidate(&routes::service_scope_prefix(project, service), path);
        Ok(())
    }

    /// Republishes routes when the next preview channel expires (one timer, replaced by each
    /// publication).
    pub(crate) fn schedule_expiry(self: &std::sync::Arc<Self>, next: Option<i64>) {
        let mut slot = self.expiry_timer.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = slot.take() {
            old.abort();
        }
        let Some(at) = next else { return };
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let wait = Duration::from_secs(at.saturating_sub(now_unix()).max(0) as u64)
            + Duration::from_millis(50);
        let me = std::sync::Arc::downgrade(self);
        *slot = Some(handle.spawn(async move {
            tokio::time::sleep(wait).await;
            if let Some(me) = me.upgrade() {
                // Detached, so that publishing (which replaces this timer) does not abort itself; a
                // failure is retried, or the expired channel would serve until the next change.
                tokio::spawn(async move {
                    let mut backoff = Duration::from_secs(1);
                    while let Err(e) = me.publish_routes().await {
                        tracing::error!(
                            "republishing routes after a channel expired: {e}; again in {backoff:?}"
                        );
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(60));
                    }
                });
            }
        }));
    }
}
