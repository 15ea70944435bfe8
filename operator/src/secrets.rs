//! The Secrets the operator reads by name (a CachePolicy's `passwordSecretRef`), each kept
//! for [`SECRET_TTL`] after it was read, so that a running policy costs the API server one
//! GET per Secret every 30 s rather than one at every dispatch and statistics sample. A
//! Secret found missing is not remembered (it is looked for again each time), and one whose
//! password Redis refuses is forgotten at once, so a corrected password is read at the next
//! dispatch. The values stay in this process's memory only.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

/// How long a Secret read is used before it is read again (a rotated password is used from
/// then on, or at once when Redis refuses the old one).
pub const SECRET_TTL: Duration = Duration::from_secs(30);

/// A Secret read at some time.
#[derive(Clone)]
struct Entry {
    read_at: Instant,
    secret: Arc<Secret>,
}

/// Whether a Secret read at `read_at` may still be used at `now`.
fn fresh(read_at: Instant, now: Instant, ttl: Duration) -> bool {
    now.saturating_duration_since(read_at) < ttl
}

/// Secrets by namespace and name.
#[derive(Default)]
pub struct SecretCache {
    entries: Mutex<HashMap<(String, String), Entry>>,
}

impl SecretCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Entry>> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The Secret `namespace/name` as read within [`SECRET_TTL`], or read now.
    pub async fn get(&self, client: &Client, namespace: &str, name: &str) -> kube::Result<Option<Arc<Secret>>> {
        let key = (namespace.to_owned(), name.to_owned());
        if let Some(entry) = self.lock().get(&key)
            && fresh(entry.read_at, Instant::now(), SECRET_TTL)
        {
            return Ok(Some(entry.secret.clone()));
        }
        let read_at = Instant::now();
        let secret = Api::<Secret>::namespaced(client.clone(), namespace).get_opt(name).await?.map(Arc::new);
        let mut entries = self.lock();
        // Secrets of policies that are gone go with the next read of any.
        entries.retain(|_, e| fresh(e.read_at, read_at, SECRET_TTL));
        match &secret {
            Some(s) => entries.insert(key, Entry { read_at, secret: s.clone() }),
            None => entries.remove(&key),
        };
        Ok(secret)
    }

    /// Drops `namespace/name`: its value was refused, the next use reads it again.
    pub fn forget(&self, namespace: &str, name: &str) {
        self.lock().remove(&(namespace.to_owned(), name.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_is_used_for_the_ttl_only() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(30);
        assert!(fresh(t0, t0, ttl));
        assert!(fresh(t0, t0 + Duration::from_secs(29), ttl));
        assert!(!fresh(t0, t0 + ttl, ttl), "read again once the TTL has passed");
    }

    #[test]
    fn forgetting_drops_one_secret() {
        let cache = SecretCache::default();
        let entry = Entry { read_at: Instant::now(), secret: Arc::new(Secret::default()) };
        cache.lock().insert(("shop".into(), "a".into()), entry.clone());
        cache.lock().insert(("shop".into(), "b".into()), entry);
        cache.forget("shop", "a");
        assert!(!cache.lock().contains_key(&("shop".into(), "a".into())));
        assert!(cache.lock().contains_key(&("shop".into(), "b".into())));
    }
}
