#![no_main]
//! Token parsing and verification (binary and text forms) fed arbitrary bytes.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| atbus_auth::fuzz_auth_token(data));
