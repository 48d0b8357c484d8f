#![no_main]
//! TLS handshake records (the content of `TLS_HANDSHAKE` packets) fed arbitrary bytes.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| atbus_auth::tls::fuzz_tls_record(data));
