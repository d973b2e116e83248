//! Decrypted secrets and their redaction automatons, kept between calls of a running
//! engine and dropped whenever the vault changes.
//!
//! Building the redaction automaton for a call's secrets costs more than the rest of the
//! call, and reading a secret is a database read and a decryption; both give the same
//! answer until the vault changes. Entries are tagged with the vault's data version read
//! before the secrets are, so a change made meanwhile by another process makes the next
//! call start afresh. Values stay in zeroizing buffers and are wiped when dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use agentsecrets_core::names::SecretKey;
use agentsecrets_core::redact::RedactionSet;
use agentsecrets_core::secret::SecretValue;

/// Distinct secret combinations kept before the cache starts over, so a caller cycling
/// through many combinations cannot grow it without bound.
const MAX_ENTRIES: usize = 256;

/// Secrets and redaction sets valid for one version of the vault.
#[derive(Default)]
pub struct SecretCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    version: Option<i64>,
    values: HashMap<SecretKey, SecretValue>,
    redactions: HashMap<Vec<SecretKey>, Arc<RedactionSet>>,
}

impl SecretCache {
    /// The value of `key` at vault `version`, from the cache or from `read`. Nothing is
    /// cached when the version is unknown.
    pub fn value<E>(
        &self,
        version: Option<i64>,
        key: &SecretKey,
        read: impl FnOnce() -> Result<SecretValue, E>,
    ) -> Result<SecretValue, E> {
        let Some(mut inner) = self.at(version) else { return read() };
        if let Some(value) = inner.values.get(key) {
            return Ok(value.clone());
        }
        let value = read()?;
        if inner.values.len() >= MAX_ENTRIES {
            inner.values.clear();
        }
        inner.values.insert(key.clone(), value.clone());
        Ok(value)
    }

    /// The redaction set for the secrets named `keys` at vault `version`, from the cache
    /// or from `build`.
    pub fn redaction(
        &self,
        version: Option<i64>,
        keys: &[&SecretKey],
        build: impl FnOnce() -> RedactionSet,
    ) -> Arc<RedactionSet> {
        let Some(mut inner) = self.at(version) else { return Arc::new(build()) };
        let mut names: Vec<SecretKey> = keys.iter().map(|k| (*k).clone()).collect();
        names.sort_unstable();
        names.dedup();
        if let Some(set) = inner.redactions.get(&names) {
            return set.clone();
        }
        let set = Arc::new(build());
        if inner.redactions.len() >= MAX_ENTRIES {
            inner.redactions.clear();
        }
        inner.redactions.insert(names, set.clone());
        set
    }

    /// The cache, emptied first when it holds another version's entries; `None` when the
    /// version is unknown and nothing may be cached.
    fn at(&self, version: Option<i64>) -> Option<MutexGuard<'_, Inner>> {
        let version = version?;
        // The maps stay consistent across a panic elsewhere: each update is one insert.
        let mut inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if inner.version != Some(version) {
            *inner = Inner { version: Some(version), ..Inner::default() };
        }
        Some(inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> SecretKey {
        SecretKey::parse(name).expect("a valid key")
    }

    fn value(text: &str) -> SecretValue {
        SecretValue::new(text.as_bytes().to_vec())
    }

    #[test]
    fn a_value_is_read_once_per_vault_version() {
        let cache = SecretCache::default();
        let mut reads = 0;
        for _ in 0..3 {
            let got = cache.value(Some(1), &key("A"), || -> Result<_, ()> {
                reads += 1;
                Ok(value("one"))
            });
            assert_eq!(got.unwrap().expose(), b"one");
        }
        assert_eq!(reads, 1);

        let changed = cache.value(Some(2), &key("A"), || -> Result<_, ()> { Ok(value("two")) });
        assert_eq!(changed.unwrap().expose(), b"two", "a new version reads the vault again");
    }

    #[test]
    fn nothing_is_cached_when_the_version_is_unknown() {
        let cache = SecretCache::default();
        let mut reads = 0;
        for _ in 0..2 {
            let _ = cache.value(None, &key("A"), || -> Result<_, ()> {
                reads += 1;
                Ok(value("v"))
            });
        }
        assert_eq!(reads, 2);
    }

    #[test]
    fn a_redaction_set_is_shared_by_calls_naming_the_same_secrets() {
        let cache = SecretCache::default();
        let (a, b) = (key("A"), key("B"));
        let build = || RedactionSet::new([b"secret-a".as_slice(), b"secret-b".as_slice()]);
        let first = cache.redaction(Some(1), &[&a, &b], build);
        let again = cache.redaction(Some(1), &[&b, &a, &a], || panic!("must come from the cache"));
        assert!(Arc::ptr_eq(&first, &again));

        let other = cache.redaction(Some(2), &[&a, &b], build);
        assert!(!Arc::ptr_eq(&first, &other), "a vault change builds it again");
    }
}
