#![no_main]
//! A session fed arbitrary frames, time steps, sends and reads.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| atbus_stream::fuzz_session::session_frames(data));
