#![no_main]
//! A node fed arbitrary bytes, datagrams and packages on its links during handshakes.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| atbus_node::fuzz_handshake(data));
