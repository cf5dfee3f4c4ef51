//! Resolved handles: one revision's series, looked up once and then recorded into without a lookup,
//! and the gateway-wide counters.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::{
    ClassLabels, Families, ListenerLabels, PhaseLabels, RejectLabels, ResultLabels, RevisionLabels,
};

/// Response code classes, indexed by the status code's first digit minus one.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Why Pier itself answered 429, 503 or 504 (the `reason` label; its `code` is the status).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// 429: too many requests already wait for the revision.
    QueueFull,
    /// 429: the revision is at `max-instances` and no slot freed in time.
    MaxInstances,
    /// 503: the instance failed to start.
    StartFailed,
    /// 503: no revision is ready to serve the URL.
    NoRevision,
    /// 503: the revision is being removed.
    Closing,
    /// 504: the request's deadline passed while it waited for an instance.
    PendingTimeout,
    /// 504: the instance did not answer within the revision's timeout.
    RequestTimeout,
}

impl Rejection {
    const ALL: [Rejection; 7] = [
        Rejection::QueueFull,
        Rejection::MaxInstances,
        Rejection::StartFailed,
        Rejection::NoRevision,
        Rejection::Closing,
        Rejection::PendingTimeout,
        Rejection::RequestTimeout,
    ];

    fn code_and_reason(self) -> (&'static str, &'static str) {
        match self {
            Rejection::QueueFull => ("429", "queue_full"),
            Rejection::MaxInstances => ("429", "max_instances"),
            Rejection::StartFailed => ("503", "start_failed"),
            Rejection::NoRevision => ("503", "no_revision"),
            Rejection::Closing => ("503", "closing"),
            Rejection::PendingTimeout => ("504", "pending_timeout"),
            Rejection::RequestTimeout => ("504", "request_timeout"),
        }
    }
}

/// The phases of an instance's start, each a `phase` label of the startup histogram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartupPhase {
    /// The whole start, from the decision to start to the port answering.
    Total,
    /// Preparing the image's root file system (containers).
    ImageRoot,
    /// Writing the OCI bundle and making the instance's cgroups and network (containers).
    Bundle,
    /// The runtime starting the instance and the app opening its port.
    Runtime,
}

impl StartupPhase {
    const ALL: [StartupPhase; 4] = [
        StartupPhase::Total,
        StartupPhase::ImageRoot,
        StartupPhase::Bundle,
        StartupPhase::Runtime,
    ];

    fn label(self) -> &'static str {
        match self {
            StartupPhase::Total => "total",
            StartupPhase::ImageRoot => "image_root",
            StartupPhase::Bundle => "bundle",
            StartupPhase::Runtime => "runtime",
        }
    }
}

/// One revision's series, resolved (see the crate's docs). Recording takes no lookup and no lock
/// beyond a histogram's own.
pub struct RevisionMetrics {
    pub(crate) labels: RevisionLabels,
    count: [Counter; 5],
    latency: [Histogram; 5],
    request_bytes: Counter,
    response_bytes: Counter,
    rejected: [Counter; 7],
    /// What the in-process history reads.
    pub(crate) recent: crate::history::Recent,
    /// A revision's instance series; `None` for a service route's own handles (no instances).
    instances: Option<InstanceSeries>,
}

struct InstanceSeries {
    startup: [Histogram; 4],
    pending_wait: Histogram,
    cold_starts: Counter,
}

impl std::fmt::Debug for RevisionMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevisionMetrics")
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

fn class_labels(l: &RevisionLabels, class: &str) -> ClassLabels {
    ClassLabels {
        project: l.project.clone(),
        service: l.service.clone(),
        revision: l.revision.clone(),
        response_code_class: class.to_owned(),
    }
}

fn reject_labels(l: &RevisionLabels, r: Rejection) -> RejectLabels {
    let (code, reason) = r.code_and_reason();
    RejectLabels {
        project: l.project.clone(),
        service: l.service.clone(),
        revision: l.revision.clone(),
        code: code.to_owned(),
        reason: reason.to_owned(),
    }
}

fn phase_labels(l: &RevisionLabels, p: StartupPhase) -> PhaseLabels {
    PhaseLabels {
        project: l.project.clone(),
        service: l.service.clone(),
        revision: l.revision.clone(),
        phase: p.label().to_owned(),
    }
}

impl RevisionMetrics {
    pub(crate) fn resolve(f: &Families, labels: RevisionLabels) -> Self {
        let l = &labels;
        Self {
            count: CLASSES.map(|c| f.requests.get_or_create_owned(&class_labels(l, c))),
            latency: CLASSES.map(|c| f.latencies.get_or_create_owned(&class_labels(l, c))),
            request_bytes: f.request_bytes.get_or_create_owned(l),
            response_bytes: f.response_bytes.get_or_create_owned(l),
            rejected: Rejection::ALL.map(|r| f.rejected.get_or_create_owned(&reject_labels(l, r))),
            recent: Default::default(),
            instances: (!l.revision.is_empty()).then(|| InstanceSeries {
                startup: StartupPhase::ALL
                    .map(|p| f.startup.get_or_create_owned(&phase_labels(l, p))),
                pending_wait: f.pending_wait.get_or_create_owned(l),
                cold_starts: f.cold_starts.get_or_create_owned(l),
            }),
            labels,
        }
    }

    /// The revision's labels.
    pub fn labels(&self) -> &RevisionLabels {
        &self.labels
    }

    /// One answered request: its status, the time from its arrival to the end of its response, and
    /// its body sizes in bytes.
    pub fn request(&self, status: u16, elapsed: Duration, request_bytes: u64, response_bytes: u64) {
        let i = usize::from((status / 100).clamp(1, 5)) - 1;
        self.count[i].inc();
        self.latency[i].observe(elapsed.as_secs_f64());
        self.recent.request(elapsed);
        if request_bytes > 0 {
            self.request_bytes.inc_by(request_bytes);
        }
        if response_bytes > 0 {
            self.response_bytes.inc_by(response_bytes);
        }
    }

    /// A request Pier answered 429, 503 or 504 itself.
    pub fn rejected(&self, why: Rejection) {
        if let Some(i) = Rejection::ALL.iter().position(|r| *r == why) {
            self.rejected[i].inc();
        }
    }

    /// One phase of an instance's start.
    pub fn startup(&self, phase: StartupPhase, took: Duration) {
        if let (Some(i), Some(s)) = (
            StartupPhase::ALL.iter().position(|p| *p == phase),
            &self.instances,
        ) {
            s.startup[i].observe(took.as_secs_f64());
        }
    }

    /// A request that waited `took` for a slot.
    pub fn waited(&self, took: Duration) {
        if let Some(s) = &self.instances {
            s.pending_wait.observe(took.as_secs_f64());
        }
    }

    /// An instance started because requests waited (a cold start).
    pub fn cold_start(&self) {
        if let Some(s) = &self.instances {
            s.cold_starts.inc();
            self.recent.cold_start();
        }
    }
}

/// Drops every series of `l`.
pub(crate) fn forget(f: &Families, l: &RevisionLabels) {
    for c in CLASSES {
        f.requests.remove(&class_labels(l, c));
        f.latencies.remove(&class_labels(l, c));
    }
    f.request_bytes.remove(l);
    f.response_bytes.remove(l);
    for r in Rejection::ALL {
        f.rejected.remove(&reject_labels(l, r));
    }
    for p in StartupPhase::ALL {
        f.startup.remove(&phase_labels(l, p));
    }
    f.pending_wait.remove(l);
    f.cold_starts.remove(l);
}

/// How a TLS handshake ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handshake {
    /// Completed.
    Ok,
    /// Failed (a protocol error, no certificate for the name).
    Failed,
    /// Not done within the handshake timeout.
    TimedOut,
}

/// What the guard did with a request's token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenCheck {
    /// Accepted (verified now or found among tokens already verified).
    Accepted,
    /// Refused (bad signature, expired, wrong audience, unknown principal).
    Refused,
}

/// Gateway-wide counters (no per-service labels).
pub struct GatewayMetrics {
    connections: Family<ListenerLabels, Counter>,
    https: Counter,
    http: Counter,
    internal: Counter,
    open: Gauge,
    handshakes: Family<ResultLabels, Counter>,
    handshake: [Counter; 3],
    h2_streams: Counter,
    tokens: Family<ResultLabels, Counter>,
    token: [Counter; 2],
    acme: Family<ResultLabels, Counter>,
    route_publish: Histogram,
    routed_hosts: Gauge,
}

impl std::fmt::Debug for GatewayMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayMetrics").finish_non_exhaustive()
    }
}

fn result(r: &str) -> ResultLabels {
    ResultLabels { result: r.into() }
}

impl GatewayMetrics {
    pub(crate) fn new() -> Self {
        let connections: Family<ListenerLabels, Counter> = Family::default();
        let listener =
            |l: &str| connections.get_or_create_owned(&ListenerLabels { listener: l.into() });
        let (https, http, internal) = (listener("https"), listener("http"), listener("internal"));
        let handshakes: Family<ResultLabels, Counter> = Family::default();
        let handshake =
            ["ok", "failed", "timeout"].map(|r| handshakes.get_or_create_owned(&result(r)));
        let tokens: Family<ResultLabels, Counter> = Family::default();
        let token = ["accepted", "refused"].map(|r| tokens.get_or_create_owned(&result(r)));
        Self {
            connections,
            https,
            http,
            internal,
            open: Gauge::default(),
            handshakes,
            handshake,
            h2_streams: Counter::default(),
            tokens,
            token,
            acme: Family::default(),
            route_publish: crate::startup_histogram(),
            routed_hosts: Gauge::default(),
        }
    }

    pub(crate) fn register(&self, r: &mut Registry) {
        r.register(
            "connections",
            "Client connections accepted, by listener (https, http, internal: a gateway entrance inside an instance's namespace)",
            self.connections.clone(),
        );
        r.register(
            "open_connections",
            "Client connections open now",
            self.open.clone(),
        );
        r.register(
            "tls_handshakes",
            "TLS handshakes, by result",
            self.handshakes.clone(),
        );
        r.register(
            "http2_streams",
            "HTTP/2 streams (requests) received",
            self.h2_streams.clone(),
        );
        r.register(
            "token_verifications",
            "Identity tokens the guard checked, by result: accepted, refused",
            self.tokens.clone(),
        );
        r.register(
            "acme_orders",
            "ACME certificate orders for mapped domains, by result",
            self.acme.clone(),
        );
        r.register(
            "route_publish_seconds",
            "Time to publish the routing table after a change: from the start of its rebuild (reading the store) to the gateway serving it",
            self.route_publish.clone(),
        );
        r.register(
            "routed_hosts",
            "Hosts in the routing table the gateway serves (service, tag, gateway, site and mapped-domain URLs)",
            self.routed_hosts.clone(),
        );
    }

    /// A connection accepted: `internal` when on an instance's gateway entrance, else by `tls`.
    /// Returns a guard that counts it open until dropped.
    pub fn connection(&self, tls: bool, internal: bool) -> OpenConnection {
        match (internal, tls) {
            (true, _) => self.internal.inc(),
            (false, true) => self.https.inc(),
            (false, false) => self.http.inc(),
        };
        self.open.inc();
        OpenConnection(self.open.clone())
    }

    /// A TLS handshake ended.
    pub fn handshake(&self, how: Handshake) {
        let i = match how {
            Handshake::Ok => 0,
            Handshake::Failed => 1,
            Handshake::TimedOut => 2,
        };
        self.handshake[i].inc();
    }

    /// An HTTP/2 stream.
    pub fn h2_stream(&self) {
        self.h2_streams.inc();
    }

    /// A token check.
    pub fn token(&self, check: TokenCheck) {
        let i = match check {
            TokenCheck::Accepted => 0,
            TokenCheck::Refused => 1,
        };
        self.token[i].inc();
    }

    /// A routing table was published: `took` from the start of its rebuild, `hosts` routed hosts.
    pub fn routes_published(&self, took: std::time::Duration, hosts: usize) {
        self.route_publish.observe(took.as_secs_f64());
        self.routed_hosts
            .set(i64::try_from(hosts).unwrap_or(i64::MAX));
    }

    /// An ACME order ended (`valid`, `invalid`, `error`). Rare: looked up each time.
    pub fn acme_order(&self, result_label: &'static str) {
        self.acme.get_or_create(&result(result_label)).inc();
    }
}

/// Counts a connection open while it lives.
#[derive(Debug)]
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}
