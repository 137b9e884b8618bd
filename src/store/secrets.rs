//! `secret_env` at rest: sealed with AES-256-GCM before it reaches the store, bound to its
//! job's id (so a sealed value copied onto another job does not open), and opened only to
//! launch the job. A stolen database file, or a backup of one, holds no secret in the
//! clear. The store deletes a job's sealed secrets once the job has ended and its workload
//! is released: nothing needs them after that.
//!
//! The key is 32 bytes, base64-encoded, from `store.secret_key` (or the environment, as
//! `OFFLOAD_STORE__SECRET_KEY`); without one, from the key file beside the database,
//! created on first start with a fresh random key and mode 0600.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use uuid::Uuid;

/// What sealed values start with, so that the format can change later.
const PREFIX: &str = "v1:";
const NONCE_LEN: usize = 12;

/// Seals and opens jobs' secret values.
pub struct SecretBox {
    cipher: Aes256Gcm,
}

impl SecretBox {
    /// From a base64-encoded 32-byte key.
    pub fn from_base64(key: &str) -> Result<SecretBox, String> {
        let bytes = B64
            .decode(key.trim())
            .map_err(|e| format!("the secret key is not base64: {e}"))?;
        if bytes.len() != 32 {
            return Err(format!(
                "the secret key must be 32 bytes (base64 of them), not {}",
                bytes.len()
            ));
        }
        Ok(SecretBox {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes)),
        })
    }

    /// A fresh random key, base64-encoded.
    fn new_key() -> String {
        B64.encode(Aes256Gcm::generate_key(OsRng))
    }

    /// With a fresh random key, for a store nothing will read again.
    pub fn random() -> SecretBox {
        SecretBox::from_base64(&SecretBox::new_key()).expect("a fresh key is 32 bytes")
    }

    /// From the key file at `path`, which is created with a fresh key if it is missing.
    pub fn from_file(path: &Path) -> Result<SecretBox, String> {
        let shown = path.display();
        match std::fs::read_to_string(path) {
            Ok(text) => SecretBox::from_base64(&text).map_err(|e| format!("{shown}: {e}")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = SecretBox::new_key();
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| format!("creating {shown}: {e}"))?;
                file.write_all(key.as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(|e| format!("writing {shown}: {e}"))?;
                tracing::info!(path = %shown, "created a new key for secrets at rest");
                SecretBox::from_base64(&key)
            }
            Err(e) => Err(format!("reading {shown}: {e}")),
        }
    }

    /// Seals `secrets` for job `id`.
    pub fn seal(&self, id: Uuid, secrets: &BTreeMap<String, String>) -> String {
        let plain = serde_json::to_vec(secrets).expect("string maps serialise");
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: &plain,
                    aad: id.as_bytes(),
                },
            )
            .expect("AES-GCM seals any message of this size");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!("{PREFIX}{}", B64.encode(out))
    }

    /// Opens what [`SecretBox::seal`] sealed for job `id`.
    pub fn open(&self, id: Uuid, sealed: &str) -> Result<BTreeMap<String, String>, String> {
        let bytes = sealed
            .strip_prefix(PREFIX)
            .and_then(|b| B64.decode(b).ok())
            .filter(|b| b.len() > NONCE_LEN)
            .ok_or("the stored secrets are not in a format this offload knows")?;
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: id.as_bytes(),
                },
            )
            .map_err(|_| {
                "the stored secrets do not open with this key (was store.secret_key changed?)"
            })?;
        serde_json::from_slice(&plain).map_err(|e| format!("the stored secrets: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_for_their_job_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let sealer = SecretBox::from_file(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = SecretBox::from_file(&path).unwrap();
        let (id, other) = (Uuid::now_v7(), Uuid::now_v7());
        let secrets = BTreeMap::from([("PW".to_string(), "hunter2".to_string())]);
        let sealed = sealer.seal(id, &secrets);
        assert!(!sealed.contains("hunter2"));
        assert_eq!(again.open(id, &sealed).unwrap(), secrets);
        assert!(
            again.open(other, &sealed).is_err(),
            "opened for another job"
        );
        let stranger = SecretBox::from_base64(&B64.encode([7u8; 32])).unwrap();
        assert!(
            stranger.open(id, &sealed).is_err(),
            "opened with another key"
        );
        let short = SecretBox::from_base64("c2hvcnQ=").err().unwrap();
        assert!(short.contains("32 bytes"), "{short}");
    }
}
