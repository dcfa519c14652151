//! Signed manifests: with `models.trusted_keys` set, write access to the bucket alone
//! cannot make a detector serve a model.
//!
//! A publisher with a signing key writes `models/<version>/manifest.sig` next to the
//! manifest: an ed25519 signature over the manifest's exact stored bytes. The manifest's
//! SHA-256 covers the model file (and the holdout record), so the signature covers them
//! too. A detector with trusted keys refuses a version whose signature is missing, made
//! by another key, or does not match the bytes (reason `signature`); a model file
//! swapped under a signed manifest fails its checksum (reason `checksum`).
//!
//! Key files (`fraudstream keygen`): the secret key is the 32-byte seed in hex on one
//! line (mode 0600); the public key, `NAME.pub`, is `ed25519:` and 32 bytes in hex, the
//! form `models.trusted_keys` takes.

use std::fmt;
use std::path::Path;

use ed25519_dalek::{Signer, Verifier};
use serde::{Deserialize, Serialize};

const PUBLIC_PREFIX: &str = "ed25519:";

/// Why a key could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read or written.
    #[error("{path}: {cause}")]
    Io {
        /// The file.
        path: String,
        /// The cause (shown in the message, so not chained again).
        cause: std::io::Error,
    },
    /// The text is not a key.
    #[error("{0}")]
    Format(String),
}

fn hex32(text: &str, what: &str) -> Result<[u8; 32], KeyError> {
    let text = text.trim();
    let bad = || KeyError::Format(format!("{what}: expected 64 hexadecimal digits"));
    if text.len() != 64 || !text.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A public key a detector trusts.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl PublicKey {
    /// Parse `ed25519:<64 hex digits>` (the prefix may be omitted).
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        let bytes = hex32(
            text.strip_prefix(PUBLIC_PREFIX).unwrap_or(text),
            "public key",
        )?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map(Self)
            .map_err(|e| KeyError::Format(format!("public key: {e}")))
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PUBLIC_PREFIX}{}", hex(self.0.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A publisher's signing key.
pub struct SigningKey(ed25519_dalek::SigningKey);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.public())
    }
}

impl SigningKey {
    /// A new key from the operating system's random source.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Format(format!("random source: {e}")))?;
        Ok(Self(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    /// Read a secret key file.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|cause| KeyError::Io {
            path: path.display().to_string(),
            cause,
        })?;
        let seed = hex32(&text, &path.display().to_string())?;
        Ok(Self(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    /// Write the secret key to `path` (readable by its owner only) and the public key to
    /// `path.pub`. Refuses to overwrite either.
    pub fn save(&self, path: &Path) -> Result<std::path::PathBuf, KeyError> {
        let public = path.with_file_name(format!(
            "{}.pub",
            path.file_name()
                .map_or_else(|| "key".into(), |n| n.to_string_lossy().into_owned())
        ));
        let io = |p: &Path| {
            let p = p.display().to_string();
            move |cause| KeyError::Io { path: p, cause }
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut secret = options.open(path).map_err(io(path))?;
        std::io::Write::write_all(
            &mut secret,
            format!("{}\n", hex(self.0.as_bytes())).as_bytes(),
        )
        .map_err(io(path))?;
        let mut public_file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&public)
            .map_err(io(&public))?;
        std::io::Write::write_all(&mut public_file, format!("{}\n", self.public()).as_bytes())
            .map_err(io(&public))?;
        Ok(public)
    }

    /// The public half.
    #[must_use]
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Sign a manifest's bytes.
    #[must_use]
    pub fn sign(&self, manifest: &[u8]) -> ManifestSignature {
        ManifestSignature {
            algorithm: "ed25519".into(),
            key: self.public().to_string(),
            signature: hex(&self.0.sign(manifest).to_bytes()),
        }
    }
}

/// `models/<version>/manifest.sig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestSignature {
    /// Always `ed25519`.
    pub algorithm: String,
    /// The signer's public key, `ed25519:<hex>`.
    pub key: String,
    /// The 64-byte signature over the manifest's bytes, hex.
    pub signature: String,
}

impl ManifestSignature {
    /// Check this signature of `manifest` against the `trusted` keys; `Err` says why not.
    pub fn verify(&self, manifest: &[u8], trusted: &[PublicKey]) -> Result<(), String> {
        if self.algorithm != "ed25519" {
            return Err(format!(
                "unsupported signature algorithm {:?}",
                self.algorithm
            ));
        }
        let key = PublicKey::parse(&self.key).map_err(|e| e.to_string())?;
        if !trusted.contains(&key) {
            return Err(format!("signed by {key}, which is not a trusted key"));
        }
        let sig = self.signature.trim();
        if sig.len() != 128 {
            return Err("the signature is not 64 bytes of hex".into());
        }
        let mut bytes = [0u8; 64];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(&sig[2 * i..2 * i + 2], 16)
                .map_err(|_| "the signature is not hex".to_owned())?;
        }
        key.0
            .verify(manifest, &ed25519_dalek::Signature::from_bytes(&bytes))
            .map_err(|_| format!("the manifest does not match its signature by {key}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_bytes_and_a_trusted_key() {
        let key = SigningKey::generate().unwrap();
        let other = SigningKey::generate().unwrap();
        let sig = key.sign(b"manifest");
        sig.verify(b"manifest", &[key.public()]).unwrap();
        let e = sig.verify(b"manifest!", &[key.public()]).unwrap_err();
        assert!(e.contains("does not match"), "{e}");
        let e = sig.verify(b"manifest", &[other.public()]).unwrap_err();
        assert!(e.contains("not a trusted key"), "{e}");
        let forged = ManifestSignature {
            key: other.public().to_string(),
            ..sig
        };
        assert!(forged.verify(b"manifest", &[other.public()]).is_err());
    }

    #[test]
    fn keys_round_trip_through_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("release");
        let key = SigningKey::generate().unwrap();
        let public = key.save(&path).unwrap();
        assert!(key.save(&path).is_err(), "never overwritten");
        let again = SigningKey::load(&path).unwrap();
        assert_eq!(again.public(), key.public());
        let text = std::fs::read_to_string(public).unwrap();
        assert_eq!(PublicKey::parse(&text).unwrap(), key.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(PublicKey::parse("ed25519:abcd").is_err());
        assert!(SigningKey::load(&dir.path().join("missing")).is_err());
    }
}
