//! The loop that keeps every mapped domain's certificate current: issue when a domain becomes ready to
//! serve, renew on [`crate::schedule`], retry failures with back-off, and never drop a certificate that
//! still serves before its replacement is stored and installed.
//!
//! Orders for different domains run concurrently, at most [`MAX_CONCURRENT_ORDERS`] at a time so that a
//! thousand new domains do not storm the CA. Certificates are stored before they are served, so a
//! restart (or a kill -9 mid-order) serves what was stored and orders again only what was not.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use pier_model::domains::CertificateMode;
use pier_store::{CertificateRecord, Store};
use pier_tls::SniResolver;
use tokio::sync::{Notify, Semaphore, watch};

use crate::schedule;
use crate::{IssueError, Issued, Issuer, from_unix, unix};

/// Most ACME orders in flight at once.
pub const MAX_CONCURRENT_ORDERS: usize = 4;
/// Longest sleep of the loop between looks (it also wakes on every change).
const TICK: Duration = Duration::from_secs(30);

/// A domain that should have a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    /// The domain.
    pub domain: String,
    /// Where its certificate comes from.
    pub mode: CertificateMode,
    /// Whether to order now: the domain is verified and routes somewhere. Otherwise a stored certificate
    /// keeps serving, but nothing is ordered.
    pub ready: bool,
    /// With mode `NONE`: the certificate chain and key files to serve, reloaded when they change.
    pub files: Option<(PathBuf, PathBuf)>,
}

/// Where a domain's certificate stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertStatus {
    /// The domain is not managed (mode `NONE`, or not mapped).
    Unmanaged,
    /// Waiting for the domain to be ready (verified, routed) before ordering.
    Waiting,
    /// An order is under way or about to start.
    Pending,
    /// Serving a certificate valid until this time; `renewal_error` holds the last renewal's failure.
    Ready {
        /// End of validity.
        not_after: SystemTime,
        /// Why the last renewal failed, if it did (the certificate keeps serving).
        renewal_error: Option<String>,
    },
    /// Issuing failed; the next try is at `retry_at`.
    Failed {
        /// `RateLimited` or `CertificateProvisionFailed`.
        reason: &'static str,
        /// The CA's words.
        message: String,
        /// When it is tried again.
        retry_at: SystemTime,
    },
}

impl CertStatus {
    /// Whether a certificate serves the domain.
    pub fn is_ready(&self) -> bool {
        matches!(self, CertStatus::Ready { .. })
    }
}

#[derive(Debug, Default)]
struct Entry {
    mode: CertificateMode,
    ready: bool,
    /// Validity of the certificate served, if any.
    cert: Option<(SystemTime, SystemTime)>,
    /// Spreads this domain's renewals and retries.
    jitter: f64,
    failures: u32,
    last_error: Option<(&'static str, String)>,
    retry_at: Option<SystemTime>,
    in_flight: bool,
    /// Mode `NONE`: the files, and their modification times when last loaded.
    files: Option<(PathBuf, PathBuf)>,
    files_stamp: Option<(SystemTime, SystemTime)>,
    /// The served chain (PEM), to ask the CA about.
    chain_pem: Option<Arc<str>>,
    /// The CA's renewal window for it, if it offers one (RFC 9773).
    window: Option<(SystemTime, SystemTime)>,
    /// When to ask the CA for the window (again), and whether a question is under way.
    window_next: Option<SystemTime>,
    window_in_flight: bool,
    /// The certificate served came from another source (the mode changed): order now, and keep
    /// serving it until the new one is in place.
    replace: bool,
    /// Whether `want` has named this domain's mode (certificates loaded at start wait for it).
    configured: bool,
}

impl Entry {
    /// When this domain next needs an order, if it does: inside the CA's renewal window when it gave
    /// one, else at a third of the lifetime left.
    fn due(&self, now: SystemTime) -> Option<SystemTime> {
        if !self.ready || self.mode == CertificateMode::None || self.in_flight {
            return None;
        }
        let renew = match (self.cert, self.window) {
            (Some(_), _) if self.replace => SystemTime::UNIX_EPOCH,
            (Some(_), Some((start, end))) => {
                schedule::renew_in_window(start, end, now, self.jitter)
            }
            (Some((from, to)), None) => schedule::renew_at(from, to, self.jitter),
            (None, _) => SystemTime::UNIX_EPOCH,
        };
        Some(match self.retry_at {
            Some(r) => r.max(renew),
            None => renew,
        })
    }
}

/// Keeps certificates of mapped domains current.
pub struct CertManager {
    store: Arc<Store>,
    resolver: Arc<SniResolver>,
    acme: Option<Arc<dyn Issuer>>,
    local: Arc<dyn Issuer>,
    entries: Mutex<HashMap<String, Entry>>,
    wake: Notify,
    orders: Arc<Semaphore>,
    /// Bumped whenever a status changes (the control plane waits on it).
    changes: watch::Sender<u64>,
}

impl std::fmt::Debug for CertManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertManager").finish_non_exhaustive()
    }
}

impl CertManager {
    /// A manager installing certificates in `resolver` and keeping them in `store`. `acme` issues for
    /// mode `AUTOMATIC` (none: such domains fail with the reason), `local` for mode `LOCAL_CA`.
    pub fn new(
        store: Arc<Store>,
        resolver: Arc<SniResolver>,
        acme: Option<Arc<dyn Issuer>>,
        local: Arc<dyn Issuer>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            resolver,
            acme,
            local,
            entries: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            orders: Arc::new(Semaphore::new(MAX_CONCURRENT_ORDERS)),
            changes: watch::channel(0).0,
        })
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serves the certificates in the store (at start, before any mapping is looked at).
    ///
    /// # Errors
    /// The store's.
    pub fn load(&self) -> Result<usize, pier_store::StoreError> {
        let certs = self.store.certificates()?;
        let mut entries = self.entries();
        let mut n = 0;
        for c in certs {
            match self.install(&c) {
                Ok(()) => {
                    let e = entries.entry(c.domain.clone()).or_default();
                    e.cert = Some((from_unix(c.not_before), from_unix(c.not_after)));
                    e.chain_pem = Some(c.chain_pem.as_str().into());
                    e.jitter = fastrand::f64();
                    n += 1;
                }
                Err(why) => {
                    tracing::error!(domain = %c.domain, "stored certificate cannot be served: {why}")
                }
            }
        }
        Ok(n)
    }

    fn install(&self, c: &CertificateRecord) -> Result<(), String> {
        self.resolver.set_exact(&c.domain, certified(c)?);
        Ok(())
    }

    /// Sets the domains that should have certificates. Domains no longer wanted stop being served.
    pub fn want(&self, wanted: Vec<Wanted>) {
        let mut entries = self.entries();
        let keep: std::collections::HashSet<&str> =
            wanted.iter().map(|w| w.domain.as_str()).collect();
        let gone: Vec<String> = entries
            .keys()
            .filter(|d| !keep.contains(d.as_str()))
            .cloned()
            .collect();
        for d in gone {
            entries.remove(&d);
            self.resolver.remove(&d);
        }
        for w in wanted {
            let e = entries.entry(w.domain.clone()).or_insert_with(|| Entry {
                jitter: fastrand::f64(),
                ..Entry::default()
            });
            if e.files != w.files {
                e.files_stamp = None;
            }
            if e.mode != w.mode && e.configured {
                // A new source: what the old one issued is replaced (and serves until then).
                e.retry_at = None;
                e.failures = 0;
                e.last_error = None;
                e.replace = e.cert.is_some() && w.mode != CertificateMode::None;
            }
            e.configured = true;
            e.mode = w.mode;
            e.ready = w.ready;
            e.files = w.files;
        }
        drop(entries);
        self.wake.notify_one();
    }

    /// Where `domain`'s certificate stands.
    pub fn status(&self, domain: &str) -> CertStatus {
        let entries = self.entries();
        let Some(e) = entries.get(domain) else {
            return CertStatus::Unmanaged;
        };
        if e.mode == CertificateMode::None && e.files.is_none() {
            return CertStatus::Unmanaged;
        }
        match (e.cert, &e.last_error, e.retry_at) {
            (Some((_, not_after)), err, _) => CertStatus::Ready {
                not_after,
                renewal_error: err.as_ref().map(|(_, m)| m.clone()),
            },
            (None, Some((reason, message)), Some(retry_at)) if !e.in_flight => CertStatus::Failed {
                reason,
                message: message.clone(),
                retry_at,
            },
            _ if !e.ready => CertStatus::Waiting,
            _ => CertStatus::Pending,
        }
    }

    /// A receiver that sees a new value whenever a status changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Runs until `shutdown` turns true: starts due orders, sleeps until the next is due or something
    /// changes.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            self.reload_files();
            let now = SystemTime::now();
            let mut next = now + TICK;
            let mut start = Vec::new();
            let mut ask = Vec::new();
            {
                let mut entries = self.entries();
                for (domain, e) in entries.iter_mut() {
                    if let Some(pem) = self.window_question(e, now) {
                        e.window_in_flight = true;
                        ask.push((domain.clone(), pem));
                    }
                    let Some(due) = e.due(now) else { continue };
                    if due <= now {
                        e.in_flight = true;
                        start.push((domain.clone(), e.mode));
                    } else {
                        next = next.min(due);
                    }
                }
            }
            for (domain, mode) in start {
                let this = self.clone();
                tokio::spawn(async move { this.renew(domain, mode).await });
            }
            for (domain, pem) in ask {
                let this = self.clone();
                tokio::spawn(async move { this.ask_window(domain, pem).await });
            }
            let sleep = next
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
                .max(Duration::from_millis(50));
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.wake.notified() => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    /// The chain to ask the ACME CA about, when `e`'s renewal window is due a (new) look.
    fn window_question(&self, e: &Entry, now: SystemTime) -> Option<Arc<str>> {
        if !e.configured
            || e.mode != CertificateMode::Automatic
            || e.window_in_flight
            || e.in_flight
            || self.acme.is_none()
        {
            return None;
        }
        let pem = e.chain_pem.clone()?;
        e.window_next.is_none_or(|t| t <= now).then_some(pem)
    }

    async fn ask_window(self: Arc<Self>, domain: String, pem: Arc<str>) {
        let Some(acme) = self.acme.clone() else {
            return;
        };
        // Within the orders' limit: a restart does not ask the CA about every certificate at once.
        let window = {
            let _permit = self.orders.clone().acquire_owned().await;
            acme.renewal_window(&pem).await
        };
        let mut entries = self.entries();
        if let Some(e) = entries.get_mut(&domain) {
            e.window_in_flight = false;
            // A CA without renewal information is asked again a day later (it may add it).
            let again = window.map_or(Duration::from_secs(86_400), |w| w.ask_again);
            e.window_next = Some(SystemTime::now() + again);
            // A window that ends before the certificate began (an answer about an older one) would
            // renew at once, again and again: only a window inside the certificate's life counts.
            let began = e.cert.map(|(from, _)| from);
            if e.chain_pem.as_deref() == Some(&*pem) {
                e.window = window
                    .filter(|w| began.is_none_or(|b| w.end > b))
                    .map(|w| (w.start, w.end));
            }
            if let Some(w) = window {
                tracing::debug!(%domain, start = ?w.start, end = ?w.end, "the CA's renewal window");
            }
        }
        drop(entries);
        self.wake.notify_one();
    }

    /// Serves the files of mode-`NONE` domains, again when their modification time changes. A file that
    /// cannot be read or does not hold a usable certificate and key is reported, and whatever was
    /// served before keeps serving.
    fn reload_files(&self) {
        let mut changed = false;
        let mut entries = self.entries();
        for (domain, e) in entries.iter_mut() {
            let Some((cert, key)) = e.files.clone() else {
                continue;
            };
            let mtime = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified());
            let stamp = match (mtime(&cert), mtime(&key)) {
                (Ok(a), Ok(b)) => Some((a, b)),
                (Err(err), _) | (_, Err(err)) => {
                    let msg = format!(
                        "cannot read the certificate files {} and {}: {err}",
                        cert.display(),
                        key.display()
                    );
                    if e.last_error.as_ref().map(|(_, m)| m) != Some(&msg) {
                        e.last_error = Some(("CertificateProvisionFailed", msg));
                        e.retry_at = Some(SystemTime::now());
                        changed = true;
                    }
                    continue;
                }
            };
            if stamp == e.files_stamp {
                continue;
            }
            e.files_stamp = stamp;
            changed = true;
            let loaded = std::fs::read_to_string(&cert)
                .and_then(|c| Ok((c, std::fs::read_to_string(&key)?)))
                .map_err(|err| err.to_string())
                .and_then(|(chain_pem, key_pem)| {
                    let (from, to) = crate::validity(&chain_pem)?;
                    let ck = pier_tls::certified_key_from_pem(&chain_pem, &key_pem, &cert, &key)
                        .map_err(|err| err.to_string())?;
                    Ok((from, to, ck))
                });
            match loaded {
                Ok((from, to, ck)) => {
                    self.resolver.set_exact(domain, Arc::new(ck));
                    e.cert = Some((from, to));
                    e.last_error = None;
                    e.retry_at = None;
                    tracing::info!(%domain, file = %cert.display(), "serving the operator's certificate");
                }
                Err(why) => {
                    tracing::warn!(%domain, "cannot serve the operator's certificate: {why}");
                    e.last_error = Some((
                        "CertificateProvisionFailed",
                        format!("{}: {why}", cert.display()),
                    ));
                    e.retry_at = Some(SystemTime::now());
                }
            }
        }
        drop(entries);
        if changed {
            self.changes.send_modify(|v| *v += 1);
        }
    }

    async fn renew(self: Arc<Self>, domain: String, mode: CertificateMode) {
        let issuer = match mode {
            CertificateMode::Automatic => self.acme.clone(),
            CertificateMode::LocalCa => Some(self.local.clone()),
            CertificateMode::None => None,
        };
        let result = match issuer {
            None => Err(IssueError::Refused(
                "this server has no ACME CA configured: start it with --acme-email (and --acme-directory for a CA other than Let's Encrypt)".into(),
            )),
            Some(issuer) => {
                let _permit = self.orders.clone().acquire_owned().await;
                tracing::info!(%domain, issuer = issuer.name(), "ordering certificate");
                let started = std::time::Instant::now();
                let out = issuer.issue(&domain).await;
                match out {
                    Ok(issued) => self
                        .store_and_serve(&domain, issuer.name(), issued)
                        .await
                        .map(|()| started.elapsed()),
                    Err(e) => Err(e),
                }
            }
        };
        {
            let mut entries = self.entries();
            if let Some(e) = entries.get_mut(&domain) {
                e.in_flight = false;
                match &result {
                    Ok(took) => {
                        tracing::info!(%domain, millis = took.as_millis() as u64, "certificate issued and serving");
                        e.replace = false;
                        e.failures = 0;
                        e.last_error = None;
                        e.retry_at = None;
                    }
                    Err(err) => {
                        e.failures += 1;
                        let (reason, ca_says) = match err {
                            IssueError::RateLimited { retry_after, .. } => {
                                ("RateLimited", *retry_after)
                            }
                            _ => ("CertificateProvisionFailed", None),
                        };
                        let wait = schedule::retry_after(e.failures, fastrand::f64(), ca_says);
                        tracing::warn!(%domain, failures = e.failures, retry_in_secs = wait.as_secs(), "certificate order failed: {err}");
                        e.last_error = Some((reason, err.to_string()));
                        e.retry_at = Some(SystemTime::now() + wait);
                    }
                }
            } else if result.is_ok() {
                // Unmapped while the order ran: do not serve it.
                self.resolver.remove(&domain);
            }
        }
        self.changes.send_modify(|v| *v += 1);
        self.wake.notify_one();
    }

    async fn store_and_serve(
        &self,
        domain: &str,
        issuer: &str,
        issued: Issued,
    ) -> Result<(), IssueError> {
        let record = CertificateRecord {
            domain: domain.to_owned(),
            chain_pem: issued.chain_pem,
            key_pem: issued.key_pem,
            not_before: unix(issued.not_before),
            not_after: unix(issued.not_after),
            issuer: issuer.to_owned(),
        };
        // Checked, then stored, then served: what is served is always what a restart would serve, and
        // the previous certificate keeps serving until this one is stored.
        let ck = certified(&record).map_err(|e| {
            IssueError::Refused(format!("the CA's certificate cannot be served: {e}"))
        })?;
        let r = record.clone();
        let stored = self
            .store
            .call(move |s| s.put_certificate(&r))
            .await
            .map_err(|e| {
                IssueError::Unavailable(format!("the certificate could not be stored: {e}"))
            })?;
        if !stored {
            return Err(IssueError::Refused(format!(
                "{domain} was unmapped while its certificate was issued; the certificate is dropped"
            )));
        }
        self.resolver.set_exact(domain, ck);
        if let Some(e) = self.entries().get_mut(domain) {
            e.cert = Some((issued.not_before, issued.not_after));
            // A new certificate: its own renewal window is asked for.
            e.chain_pem = Some(record.chain_pem.as_str().into());
            e.window = None;
            e.window_next = None;
        }
        Ok(())
    }
}

fn certified(c: &CertificateRecord) -> Result<Arc<rustls::sign::CertifiedKey>, String> {
    pier_tls::certified_key_from_pem(
        &c.chain_pem,
        &c.key_pem,
        std::path::Path::new("(store)"),
        std::path::Path::new("(store)"),
    )
    .map(Arc::new)
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests;
