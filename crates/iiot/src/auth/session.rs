//! Dashboard sessions: a random id in an `HttpOnly`, `SameSite=Strict` cookie, and a CSRF
//! token the page sends back on every state-changing request. Held in memory (a restart
//! signs everyone out), bounded by [`MAX_SESSIONS`], each expiring after `AUTH_SESSION_TTL`.
//!
//! A session names its user only: the role is looked up in the auth file on every request,
//! so removing a user or changing a role applies to open sessions at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::store::{random_hex, sha256_hex};

/// Sessions kept at once; a login beyond it ends the session closest to expiry.
pub const MAX_SESSIONS: usize = 10_000;

/// Sessions one user may hold; a login beyond it ends that user's oldest (so one account
/// cannot push everyone else out).
pub const MAX_SESSIONS_PER_USER: usize = 20;

/// The cookie's name.
pub const COOKIE: &str = "iiot_session";

/// One signed-in user.
#[derive(Debug, Clone)]
pub struct Session {
    /// The user.
    pub user: String,
    /// Sent back in `X-CSRF-Token` on every state-changing request.
    pub csrf: String,
    /// SHA-256 of the user's password hash at login: a new password (a user removed and
    /// added again) ends the session.
    pub password: String,
    /// When it ends.
    pub expires: Instant,
}

/// The open sessions, by the SHA-256 of their id (the id itself is only in the cookie).
#[derive(Debug)]
pub struct Sessions {
    ttl: Duration,
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// No sessions yet; each will last `ttl`.
    pub fn new(ttl: Duration) -> Sessions {
        Sessions {
            ttl,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// How long a session lasts.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Opens a session for `user`, whose password hash has the SHA-256 `password`: its id
    /// (for the cookie) and the session.
    pub fn open(&self, user: &str, password: &str) -> (String, Session) {
        let id = random_hex();
        let session = Session {
            user: user.to_string(),
            csrf: random_hex(),
            password: password.to_string(),
            expires: Instant::now() + self.ttl,
        };
        let mut map = self.lock();
        let mine: Vec<(String, Instant)> = map
            .iter()
            .filter(|(_, s)| s.user == user)
            .map(|(k, s)| (k.clone(), s.expires))
            .collect();
        if mine.len() >= MAX_SESSIONS_PER_USER
            && let Some((oldest, _)) = mine.iter().min_by_key(|(_, e)| *e)
        {
            map.remove(oldest);
        }
        if map.len() >= MAX_SESSIONS {
            let now = Instant::now();
            map.retain(|_, s| s.expires > now);
        }
        if map.len() >= MAX_SESSIONS {
            let oldest = map
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                map.remove(&k);
            }
        }
        map.insert(sha256_hex(&id), session.clone());
        (id, session)
    }

    /// The live session with cookie value `id`.
    pub fn get(&self, id: &str) -> Option<Session> {
        self.get_by_key(&sha256_hex(id))
    }

    /// The live session whose key (the SHA-256 of its cookie value) is `key`.
    pub fn get_by_key(&self, key: &str) -> Option<Session> {
        let key = key.to_string();
        let mut map = self.lock();
        match map.get(&key) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends the session with cookie value `id`.
    pub fn close(&self, id: &str) {
        self.close_key(&sha256_hex(id));
    }

    /// Ends the session whose key is `key`.
    pub fn close_key(&self, key: &str) {
        self.lock().remove(key);
    }

    /// Open sessions (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'h>(header: &'h str, name: &str) -> Option<&'h str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_lives_until_it_expires_or_closes() {
        let s = Sessions::new(Duration::from_secs(60));
        let (id, session) = s.open("alice", "pw");
        assert_eq!(s.get(&id).expect("ok").csrf, session.csrf);
        assert!(s.get("other").is_none());
        s.close(&id);
        assert!(s.get(&id).is_none());
        let short = Sessions::new(Duration::ZERO);
        let (id, _) = short.open("bob", "pw");
        assert!(short.get(&id).is_none());
    }

    #[test]
    fn sessions_are_bounded() {
        let s = Sessions::new(Duration::from_secs(60));
        let (first, _) = s.open("u", "pw");
        for i in 0..MAX_SESSIONS {
            s.open(&format!("u{i}"), "pw");
        }
        assert_eq!(s.len(), MAX_SESSIONS);
        assert!(s.get(&first).is_none(), "the oldest made room");
        // One user cannot hold more than its share.
        let one = Sessions::new(Duration::from_secs(60));
        let (oldest, _) = one.open("v", "pw");
        for _ in 1..=MAX_SESSIONS_PER_USER {
            one.open("v", "pw");
        }
        assert_eq!(one.len(), MAX_SESSIONS_PER_USER);
        assert!(one.get(&oldest).is_none(), "the user's oldest made room");
    }

    #[test]
    fn cookies_are_found_by_name() {
        let h = "a=1; iiot_session=abc ; b=2";
        assert_eq!(cookie(h, COOKIE), Some("abc"));
        assert_eq!(cookie(h, "c"), None);
    }
}
