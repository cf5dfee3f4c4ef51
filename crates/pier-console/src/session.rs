//! Who is signed in: the console is an OAuth client of Pier's own authorization server (the
//! authorization code grant with PKCE, RFC 6749 §4.1 and RFC 7636), and keeps each browser's tokens on
//! the server, behind a cookie.
//!
//! - Signing in: a random `state` and PKCE verifier are kept for ten minutes, the `state` also in a
//!   short cookie; the browser goes to `/authorize`, comes back to `/console/callback` with a code, and
//!   the console redeems it at `/token` only when the `state` matches the cookie (RFC 6749 §10.12).
//! - Sessions: a random id in a `__Host-` cookie (`Secure`, `HttpOnly`, `SameSite=Lax`, `Path=/`),
//!   looked up by its SHA-256 (the map holds no usable cookie). The access token is refreshed a minute
//!   before it expires; a refresh that fails (the session revoked) signs the browser out. Sessions end
//!   after twelve idle hours, at sign-out (which revokes the refresh token), and when the server
//!   restarts (they live in memory).
//! - Forms: each carries the session's CSRF token, compared in constant time; a POST whose `Origin` or
//!   `Sec-Fetch-Site` says it came from elsewhere is refused before that.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;

/// The session cookie's name (the `__Host-` prefix makes browsers insist on `Secure`, `Path=/` and no
/// `Domain`, RFC 6265bis §4.1.3.2).
pub(crate) const SESSION_COOKIE: &str = "__Host-pier-console";
/// The cookie that binds a sign-in's `state` to the browser that started it.
pub(crate) const SIGNIN_COOKIE: &str = "__Host-pier-signin";

/// A session ends after this long without a request...
const IDLE: Duration = Duration::from_secs(4 * 3600);
/// ...and this long after sign-in whatever happens (the cookie's own lifetime).
pub(crate) const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// The most sessions one user may hold (the oldest ends first), and all users together.
const PER_USER: usize = 16;
const SESSIONS: usize = 20_000;
const SIGNIN_WINDOW: Duration = Duration::from_secs(600);
/// The most sign-ins under way at once (the oldest is dropped first): anyone may start one.
const PENDING: usize = 10_000;
/// Refresh an access token this long before it expires.
const MARGIN: Duration = Duration::from_secs(60);

/// A signed-in browser's view of itself.
#[derive(Clone)]
pub(crate) struct Signed {
    pub email: String,
    pub access: String,
    pub csrf: String,
    pub flash: Option<Flash>,
}

impl std::fmt::Debug for Signed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token or the CSRF secret.
        f.debug_struct("Signed")
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

/// A one-time message for the next page: an outcome of a form.
#[derive(Clone, Debug)]
pub(crate) struct Flash {
    pub ok: bool,
    pub text: String,
}

struct Session {
    email: String,
    access: String,
    access_until: Instant,
    refresh: String,
    csrf: String,
    flash: Option<Flash>,
    opened: Instant,
    last_used: Instant,
}

impl Session {
    fn expired(&self) -> bool {
        self.last_used.elapsed() >= IDLE || self.opened.elapsed() >= LIFETIME
    }
}

/// A sign-in under way.
pub(crate) struct Pending {
    pub verifier: String,
    pub next: String,
    started: Instant,
}

/// What [`Sessions::current`] found.
pub(crate) enum Current {
    Fresh(Signed),
    /// The access token needs a refresh with this refresh token first.
    Stale {
        refresh: String,
    },
    None,
}

#[derive(Default)]
pub(crate) struct Sessions {
    live: Mutex<HashMap<String, Session>>,
    pending: Mutex<HashMap<String, Pending>>,
}

/// 32 random bytes, base64url (the identity service's secrets). A console that cannot get randomness
/// must not make sessions, so a failure panics the request.
pub(crate) fn random() -> String {
    pier_identity::passwords::new_secret().expect("the system's random number generator failed")
}

/// What a session is kept by: the hex SHA-256 of its cookie, as the store keeps refresh tokens.
fn digest(s: &str) -> String {
    pier_identity::passwords::secret_digest(s)
}

/// A cookie's value from the request's `Cookie` headers.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// A `Set-Cookie` value for one of the console's cookies (`max_age` 0 deletes it).
pub(crate) fn set_cookie(name: &str, value: &str, max_age: Duration) -> String {
    format!(
        "{name}={value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={}",
        max_age.as_secs()
    )
}

/// Whether two secrets are equal, in constant time for equal lengths.
pub(crate) fn same(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

impl Sessions {
    /// Remembers a sign-in's verifier and where to go after it; answers its `state`.
    pub fn begin(&self, verifier: String, next: String) -> String {
        let state = random();
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.retain(|_, v| v.started.elapsed() < SIGNIN_WINDOW);
        if p.len() >= PENDING
            && let Some(oldest) = p
                .iter()
                .min_by_key(|(_, v)| v.started)
                .map(|(k, _)| k.clone())
        {
            p.remove(&oldest);
        }
        p.insert(
            state.clone(),
            Pending {
                verifier,
                next,
                started: Instant::now(),
            },
        );
        state
    }

    /// Takes the sign-in `state` names, once, if it is still fresh.
    pub fn finish(&self, state: &str) -> Option<Pending> {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.remove(state)
            .filter(|v| v.started.elapsed() < SIGNIN_WINDOW)
    }

    /// Opens a session; answers its cookie value.
    pub fn open(&self, email: String, access: String, expires_in: u64, refresh: String) -> String {
        let id = random();
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|_, s| !s.expired());
        // Bounded: per user, then overall; the least recently used goes first.
        let mut theirs: Vec<(String, Instant)> = live
            .iter()
            .filter(|(_, s)| s.email == email)
            .map(|(k, s)| (k.clone(), s.last_used))
            .collect();
        theirs.sort_by_key(|(_, t)| *t);
        for (k, _) in theirs
            .iter()
            .take((theirs.len() + 1).saturating_sub(PER_USER))
        {
            live.remove(k);
        }
        if live.len() >= SESSIONS
            && let Some(k) = live
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone())
        {
            live.remove(&k);
        }
        live.insert(
            digest(&id),
            Session {
                email,
                access,
                access_until: Instant::now() + Duration::from_secs(expires_in),
                refresh,
                csrf: random(),
                flash: None,
                opened: Instant::now(),
                last_used: Instant::now(),
            },
        );
        id
    }

    /// The session behind a cookie value; takes its flash message.
    pub fn current(&self, id: &str) -> Current {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let key = digest(id);
        let Some(s) = live.get_mut(&key) else {
            return Current::None;
        };
        if s.expired() {
            live.remove(&key);
            return Current::None;
        }
        s.last_used = Instant::now();
        if s.access_until <= Instant::now() + MARGIN {
            return Current::Stale {
                refresh: s.refresh.clone(),
            };
        }
        Current::Fresh(Signed {
            email: s.email.clone(),
            access: s.access.clone(),
            csrf: s.csrf.clone(),
            flash: s.flash.take(),
        })
    }

    /// Stores a refreshed access token.
    pub fn refreshed(&self, id: &str, access: String, expires_in: u64) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = live.get_mut(&digest(id)) {
            s.access = access;
            s.access_until = Instant::now() + Duration::from_secs(expires_in);
        }
    }

    /// Leaves a message for the session's next page.
    pub fn flash(&self, id: &str, ok: bool, text: String) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = live.get_mut(&digest(id)) {
            s.flash = Some(Flash { ok, text });
        }
    }

    /// The session's CSRF token, without refreshing anything (signing out needs only that).
    pub fn csrf(&self, id: &str) -> Option<String> {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.get(&digest(id)).map(|s| s.csrf.clone())
    }

    /// Whether the session is still open (a stream it started ends when it is not).
    pub fn alive(&self, id: &str) -> bool {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.get(&digest(id)).is_some_and(|s| !s.expired())
    }

    /// Ends a session; answers its refresh token, to revoke.
    pub fn close(&self, id: &str) -> Option<String> {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.remove(&digest(id)).map(|s| s.refresh)
    }
}

/// Whether a POST came from the console's own pages: no `Sec-Fetch-Site` other than `same-origin`,
/// no `Origin` other than `origin` (browsers send at least one of them with a form POST).
pub(crate) fn same_origin(headers: &HeaderMap, origin: &str) -> bool {
    let site_ok = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v == "same-origin");
    let origin_ok = headers
        .get(axum::http::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v == origin);
    site_ok && origin_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_open_refresh_flash_and_close() {
        let s = Sessions::default();
        let id = s.open("a@example.com".into(), "tok".into(), 3600, "r".into());
        let Current::Fresh(one) = s.current(&id) else {
            panic!("a new session is fresh")
        };
        assert_eq!(
            (one.email.as_str(), one.access.as_str()),
            ("a@example.com", "tok")
        );
        assert!(matches!(s.current("forged"), Current::None));
        s.flash(&id, false, "no".into());
        let Current::Fresh(two) = s.current(&id) else {
            panic!()
        };
        assert_eq!(two.flash.map(|f| f.text).as_deref(), Some("no"));
        let Current::Fresh(three) = s.current(&id) else {
            panic!()
        };
        assert!(three.flash.is_none(), "a flash shows once");
        // An access token about to expire asks for a refresh.
        let soon = s.open("b@example.com".into(), "old".into(), 30, "r2".into());
        assert!(matches!(s.current(&soon), Current::Stale { refresh } if refresh == "r2"));
        s.refreshed(&soon, "new".into(), 3600);
        assert!(matches!(s.current(&soon), Current::Fresh(x) if x.access == "new"));
        assert_eq!(s.close(&id).as_deref(), Some("r"));
        assert!(matches!(s.current(&id), Current::None));
    }

    #[test]
    fn a_user_holds_a_bounded_number_of_sessions() {
        let s = Sessions::default();
        let ids: Vec<String> = (0..PER_USER + 3)
            .map(|_| s.open("a@example.com".into(), "t".into(), 3600, "r".into()))
            .collect();
        let live = ids.iter().filter(|i| s.alive(i)).count();
        assert_eq!(live, PER_USER);
        assert!(!s.alive(&ids[0]), "the oldest ended first");
        assert!(s.alive(ids.last().unwrap()));
        assert!(s.csrf(ids.last().unwrap()).is_some());
    }

    #[test]
    fn a_sign_in_state_is_used_once() {
        let s = Sessions::default();
        let state = s.begin("v".into(), "/console".into());
        assert_eq!(s.finish(&state).map(|p| p.verifier).as_deref(), Some("v"));
        assert!(s.finish(&state).is_none());
    }

    #[test]
    fn cookies_and_origins() {
        let mut h = HeaderMap::new();
        h.append("cookie", "a=1; __Host-pier-console=xyz".parse().unwrap());
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("xyz"));
        assert!(same_origin(&h, "https://pier.localhost:8443"));
        h.insert("origin", "https://evil.example".parse().unwrap());
        assert!(!same_origin(&h, "https://pier.localhost:8443"));
        h.insert("origin", "https://pier.localhost:8443".parse().unwrap());
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(!same_origin(&h, "https://pier.localhost:8443"));
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
