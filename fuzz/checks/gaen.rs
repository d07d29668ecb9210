//! What must hold for every input of the `gaen` fuzz targets; the targets and the corpus
//! replay test (`crates/gaen/tests/it/fuzz_corpus.rs`) both call these.

use std::sync::LazyLock;

static KEY: LazyLock<gaen::VerifyingKey> = LazyLock::new(|| {
    gaen::SigningKey::from_pem(include_str!(
        "../../crates/cli/tests/data/golden-signing-key.pem"
    ))
    .expect("test key")
    .verifying_key()
});

/// `export_zip`: an export zip as a phone or `confidant match` receives it: unzip, decode,
/// verify.
pub fn export_zip(data: &[u8]) {
    if let Ok(files) = gaen::ExportFiles::from_zip(data) {
        let _ = files.export();
        let _ = files.signatures();
        let _ = files.verify(&KEY);
    }
}

/// `export_bin`: `export.bin` and `export.sig` bodies past the zip layer, so the fuzzer
/// reaches the protobuf decoders directly. The first byte splits the input between the two.
pub fn export_bin(data: &[u8]) {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let (sig, body) = rest.split_at((split as usize).min(rest.len()));
    let mut bin = gaen::EXPORT_HEADER.to_vec();
    bin.extend_from_slice(body);
    if let Ok(export) = gaen::Export::from_bin(&bin) {
        // Whatever decodes must encode back to something that decodes to the same value.
        assert_eq!(gaen::Export::from_bin(&export.to_bin()).ok(), Some(export));
    }
    let _ = gaen::export::decode_signature_list(sig);
}
