//! Manifest and signature parsing on arbitrary bytes: never a panic. Each input is tried
//! as a whole `manifest.sig`, as a `manifest.json`, as a public key, and as the signature
//! and key strings inside an otherwise valid `manifest.sig` (so the fuzzer reaches the
//! hex decoding without first having to learn JSON). A signature that verifies must be
//! the one the trusted key made.
#![no_main]

use fraudstream_core::model::Manifest;
use fraudstream_core::signing::{ManifestSignature, PublicKey, SigningKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = SigningKey::from_seed(&[7; 32]);
    let trusted = [key.public()];
    // The first line is the manifest, the rest the signature object.
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let (manifest, rest) = data.split_at(split);
    if let Ok(m) = Manifest::parse(manifest) {
        let again = serde_json::to_vec(&m).expect("a parsed manifest serialises");
        Manifest::parse(&again).expect("a serialised manifest parses");
    }
    if let Ok(sig) = ManifestSignature::parse(rest) {
        let _checked = sig.verify(manifest, &trusted);
    }
    let text = String::from_utf8_lossy(data);
    if let Ok(k) = PublicKey::parse(&text) {
        assert_eq!(PublicKey::parse(&k.to_string()).ok(), Some(k));
    }
    let genuine = key.sign(manifest);
    let forged = ManifestSignature {
        signature: text.clone().into_owned(),
        ..genuine.clone()
    };
    if forged.verify(manifest, &trusted).is_ok() {
        assert_eq!(forged.signature.trim().to_ascii_lowercase(), genuine.signature);
    }
    let other_key = ManifestSignature {
        key: text.into_owned(),
        ..genuine
    };
    let _checked = other_key.verify(manifest, &trusted);
});
