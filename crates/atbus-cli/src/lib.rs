//! The `atbus` command of libatbus-rs: `node` (a node on real sockets, optionally echoing),
//! `send` (verified echo traffic with throughput and round-trip figures), `inspect` (a dissector
//! of captured packages, which with `--reassemble` follows their streams), `demo` (nodes over
//! every transport in one process, a simulated multi-path session, and with `--tour` a
//! dissection), and `discovery list` (the records of a discovery backend) and `token issue|verify` (signed access
//! tokens) and `relay` (the relay service with its metrics endpoint).
//!
//! The logic lives in this library so it can be tested and reused; `main.rs` only parses
//! arguments.
//!
//! ```
//! use atbus_cli::inspect::{Options, inspect};
//!
//! let capture = atbus_cli::sample::capture_stream()?;
//! let mut out = Vec::new();
//! let stats = inspect(capture.as_slice(), &mut out, &Options::default())?;
//! assert_eq!((stats.packages, stats.errors), (6, 0));
//! let first: serde_json::Value = serde_json::from_slice(out.split(|&b| b == b'\n').next().unwrap())?;
//! assert_eq!(first["frame"]["handshake"]["hello"]["node_name"], "node-a");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod demo;
pub mod demo_nodes;
pub mod demo_relay;
pub mod demo_session;
pub mod discovery;
pub mod inspect;
pub mod node;
pub mod node_routes;
pub mod reassemble;
pub mod relay;
pub mod routing;
pub mod sample;
pub mod send;
pub mod token;
pub mod token_issue;
