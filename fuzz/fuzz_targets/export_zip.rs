//! An export zip as a phone or `confidant match` receives it: unzip, decode, verify.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;

static KEY: LazyLock<gaen::VerifyingKey> = LazyLock::new(|| {
    gaen::SigningKey::from_pem(include_str!("../../crates/cli/tests/data/golden-signing-key.pem"))
        .expect("test key")
        .verifying_key()
});

fuzz_target!(|data: &[u8]| {
    if let Ok(files) = gaen::ExportFiles::from_zip(data) {
        let _ = files.export();
        let _ = files.signatures();
        let _ = files.verify(&KEY);
    }
});
