//! Thousands of mixed-size messages echoed over each transport on loopback, verified byte for byte.

mod common;

use atbus_transport_mio::TransportConfig;
use common::{echo_exchange, mixed_sizes};

/// Total bytes per direction, so CI stays fast.
const CAP: usize = 10 * 1024 * 1024;

#[test]
fn tcp_echo_mixed_sizes() {
    let sizes = mixed_sizes(1, 3000, 256 * 1024, CAP);
    echo_exchange("tcp://127.0.0.1:0", TransportConfig::default(), &sizes, 0);
}

#[test]
fn tcp_echo_with_small_queue_exercises_backpressure() {
    let config = TransportConfig {
        write_queue_limit: 64 * 1024,
        ..Default::default()
    };
    let sizes = mixed_sizes(2, 3000, 256 * 1024, CAP);
    echo_exchange("tcp://127.0.0.1:0", config, &sizes, 0);
}

#[test]
fn unix_echo_mixed_sizes() {
    let path = std::env::temp_dir().join(format!("atbus-mio-echo-{}.sock", std::process::id()));
    let sizes = mixed_sizes(3, 3000, 256 * 1024, CAP);
    echo_exchange(
        &format!("unix://{}", path.display()),
        TransportConfig::default(),
        &sizes,
        0,
    );
    assert!(!path.exists() || std::fs::remove_file(&path).is_ok());
}

#[test]
fn udp_echo_mixed_sizes() {
    let sizes = mixed_sizes(4, 5000, 1200, CAP)
        .into_iter()
        .map(|s| s.max(4))
        .collect::<Vec<_>>();
    echo_exchange("udp://127.0.0.1:0", TransportConfig::default(), &sizes, 32);
}

#[test]
fn mem_echo_mixed_sizes() {
    let sizes = mixed_sizes(5, 3000, 256 * 1024, CAP);
    echo_exchange("mem://echo-test", TransportConfig::default(), &sizes, 0);
}

#[test]
fn mem_echo_with_small_limit_exercises_backpressure() {
    let config = TransportConfig {
        write_queue_limit: 64 * 1024,
        ..Default::default()
    };
    let sizes = mixed_sizes(6, 3000, 256 * 1024, CAP);
    echo_exchange("mem://echo-test-small", config, &sizes, 0);
}
