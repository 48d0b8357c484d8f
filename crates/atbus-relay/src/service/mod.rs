//! The relay service: a [`Relay`] on the mio [`Transport`] ([`RelayDriver`]) and its metrics
//! endpoint ([`MetricsServer`], Prometheus text format over HTTP/1.0).
//!
//! ```no_run
//! use std::time::Duration;
//! use atbus_relay::RelayConfig;
//! use atbus_relay::service::{RelayDriver, TransportConfig};
//!
//! let mut d = RelayDriver::new(RelayConfig::new("relay-1"), TransportConfig::default())?;
//! let bound = d.listen(&"tcp://127.0.0.1:0".parse()?)?;
//! println!("listening on {bound}");
//! loop {
//!     d.run_once(Some(Duration::from_millis(100)))?;
//!     while let Some(event) = d.poll_event() {
//!         println!("{event:?}");
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod driver;
mod metrics_http;

pub use atbus_transport_mio::{TransportConfig, TransportHandle, Url};
pub use driver::{RelayDriver, RelayDriverError, RelayLinkFailure};
pub use metrics_http::{MetricsServer, MetricsSnapshot, render_prometheus};
