#![no_main]
//! Packet content opening and decompression fed arbitrary bytes and headers.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| atbus_auth::fuzz_auth_open(data));
