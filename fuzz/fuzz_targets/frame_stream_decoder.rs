//! The byte-stream decoder: the first input byte picks the chunk size, the rest is the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| atbus_frame::fuzz_targets::stream_decoder(data));
