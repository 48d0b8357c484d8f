//! The datagram decoder: the whole input is one UDP datagram.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| atbus_frame::fuzz_targets::datagram_decoder(data));
