#![no_main]
//! The receive-side reassembler fed arbitrary operation scripts.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| atbus_stream::fuzz_reassembly::reassembler(data));
