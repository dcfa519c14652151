//! Manifest signatures, parsed without trusting a byte of them: ed25519 public keys
//! (`ed25519:<64 hex digits>`), the `manifest.sig` object and its check. Everything here
//! reads its input as bytes, so a wrong length, a non-hex digit or a multibyte character
//! is an error that says so, never a panic (the fuzz target `manifest_parse` holds it to
//! that). Key files and the random source live in the service crate.

use std::fmt;

use ed25519_dalek::Verifier;
use serde::{Deserialize, Serialize};

/// How a public key is written: this prefix, then 32 bytes in hex.
pub const PUBLIC_PREFIX: &str = "ed25519:";

/// Text that is not a key or a signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FormatError(pub String);

/// `N` bytes from exactly `2 * N` hexadecimal digits (surrounding whitespace ignored).
/// `None` for any other length or any other character, multibyte ones included.
#[must_use]
pub fn decode_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text.trim().as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Lower-case hex of `bytes`.
#[must_use]
pub fn encode_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            // Writing to a String cannot fail.
            let _infallible = write!(s, "{b:02x}");
            s
        })
}

/// A public key a detector trusts.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl PublicKey {
    /// Parse `ed25519:<64 hex digits>` (the prefix may be omitted).
    pub fn parse(text: &str) -> Result<Self, FormatError> {
        let text = text.trim();
        let digits = text.strip_prefix(PUBLIC_PREFIX).unwrap_or(text);
        let bytes = decode_hex::<32>(digits).ok_or_else(|| {
            FormatError("public key: expected `ed25519:` and 64 hexadecimal digits".into())
        })?;
        Self::from_bytes(&bytes)
    }

    /// The key of these 32 bytes (not every 32 bytes are a point on the curve).
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, FormatError> {
        ed25519_dalek::VerifyingKey::from_bytes(bytes)
            .map(Self)
            .map_err(|e| FormatError(format!("public key: {e}")))
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PUBLIC_PREFIX}{}", encode_hex(self.0.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A publisher's signing key (its 32-byte seed). Generating one and keeping it in a file
/// is the service crate's work.
pub struct SigningKey(ed25519_dalek::SigningKey);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.public())
    }
}

impl SigningKey {
    /// The key with this seed.
    #[must_use]
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(seed))
    }

    /// Its seed, in hex (what a secret key file holds).
    #[must_use]
    pub fn seed_hex(&self) -> String {
        encode_hex(self.0.as_bytes())
    }

    /// The public half.
    #[must_use]
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Sign a manifest's bytes.
    #[must_use]
    pub fn sign(&self, manifest: &[u8]) -> ManifestSignature {
        use ed25519_dalek::Signer;
        ManifestSignature {
            algorithm: "ed25519".into(),
            key: self.public().to_string(),
            signature: encode_hex(&self.0.sign(manifest).to_bytes()),
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
    /// Parse a `manifest.sig` object; the error says why not.
    pub fn parse(bytes: &[u8]) -> Result<Self, FormatError> {
        serde_json::from_slice(bytes)
            .map_err(|e| FormatError(format!("manifest.sig does not parse: {e}")))
    }

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
        let bytes = decode_hex::<64>(&self.signature)
            .ok_or_else(|| "the signature is not 64 bytes in hex (128 hex digits)".to_owned())?;
        key.0
            .verify(manifest, &ed25519_dalek::Signature::from_bytes(&bytes))
            .map_err(|_| format!("the manifest does not match its signature by {key}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_seed(&[n; 32])
    }

    #[test]
    fn a_signature_verifies_only_for_its_bytes_and_a_trusted_key() {
        let (key, other) = (key(1), key(2));
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

    /// The reproduction of issue 22: 128 bytes of "€" and 125 zeros panicked in a byte
    /// slice inside the multibyte character.
    #[test]
    fn malformed_signatures_and_keys_are_errors_not_panics() {
        let k = key(3);
        let good = k.sign(b"m");
        let trusted = [k.public()];
        let euro = format!("€{}", "0".repeat(125));
        assert_eq!(euro.len(), 128);
        for bad in [
            euro.as_str(),
            "",
            "zz",
            &"0".repeat(127),
            &"0".repeat(129),
            &"g".repeat(128),
            &"é".repeat(64),
        ] {
            let sig = ManifestSignature {
                signature: bad.to_owned(),
                ..good.clone()
            };
            let e = sig.verify(b"m", &trusted).unwrap_err();
            assert!(e.contains("not 64 bytes in hex"), "{bad:?}: {e}");
        }
        for bad in [
            format!("ed25519:€{}", "0".repeat(61)),
            "ed25519:".to_owned(),
            "€".repeat(32),
            format!("ed25519:{}", "0".repeat(63)),
        ] {
            assert!(PublicKey::parse(&bad).is_err(), "{bad:?}");
            let sig = ManifestSignature {
                key: bad.clone(),
                ..good.clone()
            };
            assert!(sig.verify(b"m", &trusted).is_err(), "{bad:?}");
        }
        assert!(ManifestSignature::parse(b"\xff\xfe").is_err());
        assert!(ManifestSignature::parse(b"{}").is_err());
    }

    #[test]
    fn hex_round_trips_and_takes_either_case() {
        let bytes: [u8; 4] = [0, 0xab, 0x7f, 0xff];
        assert_eq!(encode_hex(&bytes), "00ab7fff");
        assert_eq!(decode_hex::<4>("00AB7fFF"), Some(bytes));
        assert_eq!(decode_hex::<4>(" 00ab7fff\n"), Some(bytes));
        assert_eq!(decode_hex::<4>("00ab7ff"), None);
        assert_eq!(decode_hex::<4>("00ab7f+f"), None);
        let k = key(4);
        assert_eq!(
            PublicKey::parse(&k.public().to_string()).unwrap(),
            k.public()
        );
        assert_eq!(
            decode_hex::<32>(&k.seed_hex()).map(|s| SigningKey::from_seed(&s).public()),
            Some(k.public())
        );
    }
}
