//! `export.bin` and `export.sig` bodies, past the zip layer, so the fuzzer reaches the
//! protobuf decoders directly. The first byte splits the input between the two.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
});
