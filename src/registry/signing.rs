//! Signed manifests: with `models.trusted_keys` set, write access to the bucket alone
//! cannot make a detector serve a model.
//!
//! A publisher with a signing key writes `models/<version>/manifest.sig` next to the
//! manifest: an ed25519 signature over the manifest's exact stored bytes. The manifest's
//! SHA-256 covers the model file (and the holdout record), so the signature covers them
//! too. A detector with trusted keys refuses a version whose signature is missing,
//! malformed, made by another key, or does not match the bytes (reason `signature`); a
//! model file swapped under a signed manifest fails its checksum (reason `checksum`).
//! Parsing and checking are the core's ([`fraudstream_core::signing`]): byte-wise, so no
//! input can panic them. This module adds the key files and the random source.
//!
//! Key files (`fraudstream keygen`): the secret key is the 32-byte seed in hex on one
//! line (mode 0600); the public key, `NAME.pub`, is `ed25519:` and 32 bytes in hex, the
//! form `models.trusted_keys` takes.

use std::path::{Path, PathBuf};

use fraudstream_core::signing::decode_hex;
pub use fraudstream_core::signing::{ManifestSignature, PublicKey, SigningKey};

/// Why a key could not be made, read or written.
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

/// A new key from the operating system's random source.
pub fn generate() -> Result<SigningKey, KeyError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| KeyError::Format(format!("random source: {e}")))?;
    Ok(SigningKey::from_seed(&seed))
}

/// Read a secret key file.
pub fn load(path: &Path) -> Result<SigningKey, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|cause| KeyError::Io {
        path: path.display().to_string(),
        cause,
    })?;
    let seed = decode_hex::<32>(&text).ok_or_else(|| {
        KeyError::Format(format!(
            "{}: expected 64 hexadecimal digits",
            path.display()
        ))
    })?;
    Ok(SigningKey::from_seed(&seed))
}

/// Write `key` to `path` (readable by its owner only) and its public half to `path.pub`.
/// Refuses to overwrite either. Returns the public key's path.
pub fn save(key: &SigningKey, path: &Path) -> Result<PathBuf, KeyError> {
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
    std::io::Write::write_all(&mut secret, format!("{}\n", key.seed_hex()).as_bytes())
        .map_err(io(path))?;
    let mut public_file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&public)
        .map_err(io(&public))?;
    std::io::Write::write_all(&mut public_file, format!("{}\n", key.public()).as_bytes())
        .map_err(io(&public))?;
    Ok(public)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("release");
        let key = generate().unwrap();
        let public = save(&key, &path).unwrap();
        assert!(save(&key, &path).is_err(), "never overwritten");
        let again = load(&path).unwrap();
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
        assert!(load(&dir.path().join("missing")).is_err());
        std::fs::write(dir.path().join("euro"), format!("€{}", "0".repeat(62))).unwrap();
        assert!(
            load(&dir.path().join("euro")).is_err(),
            "a multibyte key file"
        );
    }
}
