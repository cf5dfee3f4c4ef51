//! One route's view of the edge cache: its keys (a scope) and its settings, as the gateway's
//! [`RouteCache`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use http_cache_semantics::{BeforeRequest, CacheOptions, CachePolicy};
use pier_gateway::GatewayBody;
use pier_gateway::auth::X_SERVERLESS_AUTHORIZATION;
use pier_gateway::cache::{Lookup, RouteCache, Ticket};

use crate::{EdgeCache, Flight, Key, Stored};

/// The header that says what the cache did (Firebase Hosting's name).
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// The longest a request waits for another's fetch of the same key (a slow first reader holds the
/// others this long at most).
const WAIT_FOR_FLIGHT: Duration = Duration::from_secs(10);

/// How long a 404 without freshness of its own is kept.
const NOT_FOUND_TTL: &str = "max-age=10";

/// What a scope stores.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The largest body stored, in bytes.
    pub max_object: u64,
    /// Key answers by the `__session` cookie (hosting sites).
    pub session_key: bool,
    /// `force`: answers without freshness of their own are kept this long (never beyond what
    /// `private`, `no-store`, `no-cache` or a caller's credentials allow).
    pub force_ttl: Option<Duration>,
    /// Keep only answers that say `public` or `s-maxage` (hosting rewrites, as Firebase's CDN keeps
    /// dynamic content), 404s aside.
    pub require_public: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_object: 10 << 20,
            session_key: false,
            force_ttl: None,
            require_public: false,
        }
    }
}

/// A route's cache: a scope of the [`EdgeCache`].
pub struct ScopedCache {
    cache: Arc<EdgeCache>,
    scope: Arc<str>,
    settings: Settings,
}

/// What an unsafe method's answer carries back: the key to drop if it succeeded.
struct Invalidate(Key);

/// What a miss carries to [`RouteCache::offer`].
struct Fetch {
    key: Key,
    request: Parts,
    stale: Option<Arc<Stored>>,
    flight: Option<Flight>,
}

impl ScopedCache {
    /// The scope `scope` (a prefix other scopes do not share, as `site:PROJECT/SITE/CHANNEL/vN`).
    pub fn new(cache: Arc<EdgeCache>, scope: &str, settings: Settings) -> Arc<Self> {
        Arc::new(Self {
            cache,
            scope: scope.into(),
            settings,
        })
    }

    pub(crate) fn key(&self, req: &Parts) -> Key {
        let mut target = req
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        if self.settings.session_key
            && let Some(session) = cookie(req, "__session")
        {
            target.push('\0');
            target.push_str(session);
        }
        Key {
            scope: self.scope.clone(),
            target,
        }
    }

    /// The request as the freshness rules see it: the path and query only (the scope and key name
    /// the rest, so HTTP/1.1 and HTTP/2 requests match), no `Host`, and a Pier token counting as
    /// `Authorization` (`clean`: as if no credentials came, to tell an answer that cannot be kept
    /// from a request that may not keep it).
    fn policy_request(req: &Parts, clean: bool) -> Parts {
        let mut r = http::Request::new(());
        *r.method_mut() = Method::GET;
        if let Some(pq) = req.uri.path_and_query() {
            *r.uri_mut() = http::Uri::from(pq.clone());
        }
        *r.headers_mut() = req.headers.clone();
        r.headers_mut().remove(header::HOST);
        if clean {
            r.headers_mut().remove(header::AUTHORIZATION);
        } else if req.headers.contains_key(&X_SERVERLESS_AUTHORIZATION)
            && !req.headers.contains_key(header::AUTHORIZATION)
        {
            r.headers_mut().insert(
                header::AUTHORIZATION,
                HeaderValue::from_static("Bearer pier"),
            );
        }
        r.into_parts().0
    }

    /// A stored answer as sent: its own headers (every line of repeated ones), with its `Age`.
    fn answer(&self, stored: &Stored, method: &Method, how: &'static str) -> Response<GatewayBody> {
        let mut resp = Response::new(if *method == Method::HEAD {
            GatewayBody::empty()
        } else {
            GatewayBody::full(stored.body.clone())
        });
        *resp.status_mut() = stored.status;
        *resp.headers_mut() = stored.headers.clone();
        resp.headers_mut().insert(
            header::AGE,
            HeaderValue::from(stored.policy.age(SystemTime::now()).as_secs()),
        );
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(stored.body.len()));
        resp.headers_mut()
            .insert(X_CACHE, HeaderValue::from_static(how));
        self.cache.stats.hits.fetch_add(1, Ordering::Relaxed);
        self.cache
            .stats
            .hit_bytes
            .fetch_add(stored.body.len() as u64, Ordering::Relaxed);
        resp
    }
}

fn cookie<'a>(req: &'a Parts, name: &str) -> Option<&'a str> {
    pier_gateway::headers::cookie(&req.headers, name)
}

/// Request headers an answer may vary on and still be stored.
const VARY_OK: &[&str] = &["accept", "accept-encoding", "origin"];

/// Whether an answer may be stored beyond what RFC 9111 says: no `Set-Cookie`, a `Vary` only on what
/// Pier keys by, a whole answer.
fn pier_allows(resp: &http::response::Parts) -> bool {
    if resp.headers.contains_key(header::SET_COOKIE)
        || resp.status == StatusCode::PARTIAL_CONTENT
        || resp.headers.contains_key(header::CONTENT_RANGE)
    {
        return false;
    }
    resp.headers.get_all(header::VARY).iter().all(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .map(|h| h.trim().to_ascii_lowercase())
                .all(|h| h.is_empty() || VARY_OK.contains(&h.as_str()))
        })
    })
}

/// A `Cache-Control` directive's seconds (`stale-if-error=N`, RFC 5861).
fn directive(headers: &http::HeaderMap, name: &str) -> Option<u64> {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|d| d.trim().strip_prefix(name)?.strip_prefix('=')?.parse().ok())
}

/// `stale-if-error=N` of a stored answer (RFC 5861 §4), in seconds.
fn stale_if_error(headers: &http::HeaderMap) -> Option<u64> {
    directive(headers, "stale-if-error")
}

/// Whether an answer says a shared cache may keep it: `public` or `s-maxage`.
fn says_shared(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| {
            let d = d.trim().to_ascii_lowercase();
            d == "public" || d.starts_with("s-maxage")
        })
}

impl RouteCache for ScopedCache {
    fn lookup(&self, req: &Parts) -> Lookup {
        let method = &req.method;
        if *method != Method::GET && *method != Method::HEAD {
            if !method.is_safe() {
                // An unsafe method invalidates what is stored for its target once it succeeds
                // (RFC 9111 §4.4): its answer comes back with a ticket that only does that.
                return Lookup::Miss(Ticket(Box::new(Invalidate(self.key(req)))));
            }
            return Lookup::Bypass;
        }
        // An upgrade or a range is not for the cache; nor is a request naming another host for the
        // app to build links with (the answer could carry it to everyone).
        if [header::UPGRADE, header::RANGE, header::FORWARDED]
            .iter()
            .any(|h| req.headers.contains_key(h))
            || req.headers.contains_key("x-forwarded-host")
        {
            return Lookup::Bypass;
        }
        let key = self.key(req);
        let now = SystemTime::now();
        let mut stale = None;
        if let Some(stored) = self.cache.get(&key) {
            match stored
                .policy
                .before_request(&Self::policy_request(req, false), now)
            {
                BeforeRequest::Fresh(_) => {
                    return Lookup::Hit(Box::new(self.answer(&stored, method, "hit")));
                }
                // A stale copy stands in on errors only for a request it answers (same variant).
                BeforeRequest::Stale { matches: true, .. } => stale = Some(stored),
                BeforeRequest::Stale { .. } => {}
            }
        }
        // Kept on disk: brought back into memory, then looked up again.
        if stale.is_none() && self.cache.get(&key).is_none() && self.cache.on_disk(&key) {
            let cache = self.cache.clone();
            return Lookup::Wait(Box::pin(async move {
                let _ = tokio::task::spawn_blocking(move || cache.load(&key)).await;
            }));
        }
        // A conditional request's answer (a 304) is the client's, not the cache's.
        let conditional = req.headers.contains_key(header::IF_NONE_MATCH)
            || req.headers.contains_key(header::IF_MODIFIED_SINCE);
        if *method == Method::HEAD || conditional || self.cache.passing(&key) {
            return Lookup::Bypass;
        }
        // stale-while-revalidate (RFC 5861 §3): while one request fetches a fresh copy, the others
        // within the window get the stale one instead of waiting.
        let swr_stale = stale.as_ref().filter(|s| {
            directive(&s.headers, "stale-while-revalidate")
                .is_some_and(|w| s.policy.age(now) <= max_age(&s.headers) + Duration::from_secs(w))
        });
        let swr_stale = swr_stale.cloned();
        match Flight::start(&self.cache, &key) {
            Ok(flight) => {
                self.cache.stats.misses.fetch_add(1, Ordering::Relaxed);
                let mut request = http::Request::new(());
                *request.method_mut() = req.method.clone();
                *request.uri_mut() = req.uri.clone();
                *request.headers_mut() = req.headers.clone();
                Lookup::Miss(Ticket(Box::new(Fetch {
                    key,
                    request: request.into_parts().0,
                    stale,
                    flight: Some(flight),
                })))
            }
            Err(_) if swr_stale.is_some() => {
                let s = swr_stale.unwrap_or_else(|| unreachable!("checked"));
                Lookup::Hit(Box::new(self.answer(&s, method, "stale")))
            }
            Err(mut rx) => Lookup::Wait(Box::pin(async move {
                let _ = tokio::time::timeout(WAIT_FOR_FLIGHT, rx.wait_for(|done| *done)).await;
            })),
        }
    }

    fn offer(&self, ticket: Ticket, resp: Response<GatewayBody>) -> Response<GatewayBody> {
        let mut fetch = match ticket.0.downcast::<Fetch>() {
            Ok(f) => f,
            Err(other) => {
                let mut resp = resp;
                if let Ok(inv) = other.downcast::<Invalidate>()
                    && (resp.status().is_success() || resp.status().is_redirection())
                {
                    self.cache.remove(&inv.0);
                }
                self.bypassed(&mut resp);
                return resp;
            }
        };
        let (mut head, body) = resp.into_parts();
        head.headers
            .insert(X_CACHE, HeaderValue::from_static("miss"));
        // The rules see the answer as stored: a 404 without freshness of its own lives briefly.
        let mut judged = head.clone();
        let bare = !judged.headers.contains_key(header::EXPIRES)
            && judged
                .headers
                .get_all(header::CACHE_CONTROL)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .all(|d| {
                    let d = d.trim().to_ascii_lowercase();
                    !(d.starts_with("max-age") || d.starts_with("s-maxage"))
                });
        if bare {
            // A lifetime the answer did not give, added to what it said (so `private` or
            // `no-store` still win).
            let lifetime = match self.settings.force_ttl {
                Some(ttl) => Some(format!("max-age={}", ttl.as_secs())),
                None if judged.status == StatusCode::NOT_FOUND => Some(NOT_FOUND_TTL.to_owned()),
                None => None,
            };
            if let Some(l) = lifetime {
                let value = match judged
                    .headers
                    .get(header::CACHE_CONTROL)
                    .and_then(|v| v.to_str().ok())
                {
                    Some(old) if !old.trim().is_empty() => format!("{old}, {l}"),
                    _ => l,
                };
                if let Ok(v) = HeaderValue::from_str(&value) {
                    judged.headers.insert(header::CACHE_CONTROL, v);
                }
            }
        }
        let now = SystemTime::now();
        let options = CacheOptions {
            shared: true,
            // Only what the answer says: no heuristic freshness from `Last-Modified`.
            cache_heuristic: 0.0,
            ..CacheOptions::default()
        };
        let policy = CachePolicy::new_options(
            &Self::policy_request(&fetch.request, false),
            &judged,
            now,
            options,
        );
        let declared = head
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let fits = declared.is_none_or(|n| n <= self.settings.max_object)
            && (!self.settings.require_public
                || head.status == StatusCode::NOT_FOUND
                || says_shared(&head.headers));
        // Kept only with a lifetime of its own (or a stale-if-error window): an answer that is stale
        // at once would only make the next requests wait.
        let lives = policy.time_to_live(now) > Duration::ZERO
            || stale_if_error(&head.headers).is_some()
            || directive(&head.headers, "stale-while-revalidate").is_some();
        if !(policy.is_storable() && lives && pier_allows(&head) && fits) {
            // Passed through for a while when the answer itself cannot be kept; a request that may
            // not keep it (credentials) leaves the key to the next request.
            let answer_keepable = CachePolicy::new_options(
                &Self::policy_request(&fetch.request, true),
                &judged,
                now,
                options,
            )
            .is_storable();
            if !answer_keepable || !pier_allows(&head) || !fits || !lives {
                self.cache.pass(fetch.key.clone());
            }
            return Response::from_parts(head, body);
        }
        let flight = fetch.flight.take();
        let store = crate::body::Store {
            cache: self.cache.clone(),
            key: fetch.key.clone(),
            policy,
            status: head.status,
            // As the origin sent them (a lifetime Pier added is not told to clients).
            headers: head.headers.clone(),
            limit: self.settings.max_object,
            expected: declared,
            flight,
        };
        Response::from_parts(head, crate::body::tee(body, store))
    }

    fn on_error(&self, ticket: Ticket) -> Option<Response<GatewayBody>> {
        let fetch = ticket.0.downcast::<Fetch>().ok()?;
        let stored = fetch.stale.as_ref()?;
        let window = stale_if_error(&stored.headers)?;
        let now = SystemTime::now();
        // Past its freshness by no more than the window the answer allowed.
        if stored.policy.age(now) > max_age(&stored.headers) + Duration::from_secs(window) {
            return None;
        }
        Some(self.answer(stored, &fetch.request.method, "stale"))
    }

    fn bypassed(&self, resp: &mut Response<GatewayBody>) {
        resp.headers_mut()
            .entry(X_CACHE)
            .or_insert(HeaderValue::from_static("bypass"));
    }
}

/// `s-maxage` or `max-age` of stored headers.
fn max_age(headers: &http::HeaderMap) -> Duration {
    let mut max = None;
    for d in headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let d = d.trim();
        if let Some(v) = d.strip_prefix("s-maxage=") {
            return Duration::from_secs(v.parse().unwrap_or(0));
        }
        if let Some(v) = d.strip_prefix("max-age=") {
            max = v.parse().ok();
        }
    }
    Duration::from_secs(max.unwrap_or(0))
}
