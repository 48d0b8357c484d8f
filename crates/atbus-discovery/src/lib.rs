//! Layer 2 of libatbus-rs: service discovery without I/O.
//!
//! A node publishes a [`NodeRecord`] (name, version, key ids, host, Kubernetes-style metadata,
//! gateways, advertised relay). Records are validated with Kubernetes' name and label rules,
//! queried with label [`Selector`]s, and turned into an ordered list of ways to connect by
//! [`plan_connection`]. Backends implement the non-blocking [`Discovery`] trait; this crate
//! ships the embedded one ([`MemoryRegistry`] / [`MemoryDiscovery`], also fed by static TOML
//! files). See `docs/discovery.md` for the rules.
//!
//! ```
//! use atbus_discovery::{
//!     Discovery, DiscoveryEvent, Gateway, MemoryRegistry, NodeRecord, PlanPolicy, Route,
//!     Selector, plan_connection,
//! };
//!
//! let registry = MemoryRegistry::new();
//! let mut echo_node = registry.handle();
//! let mut client_node = registry.handle();
//!
//! let mut echo = NodeRecord::new("echo-1");
//! echo.metadata.namespace_name = "prod".into();
//! echo.metadata.kind = "echo".into();
//! echo.metadata.labels.insert("area.region".into(), "eu".into());
//! echo.gateways.push(Gateway {
//!     priority: 10,
//!     address: vec!["tcp://10.0.0.1:7000".into()],
//!     ..Gateway::default()
//! });
//! let req = echo_node.register(echo);
//! assert!(matches!(echo_node.poll_event(), Some(DiscoveryEvent::Registered { request, .. }) if request == req));
//!
//! // Another node finds it by selector and plans a connection.
//! let selector = Selector::parse("kind=echo,area.region in (eu,us)").expect("valid selector");
//! client_node.list(&selector);
//! let Some(DiscoveryEvent::List { records, .. }) = client_node.poll_event() else { panic!() };
//! let me = NodeRecord::new("client-1");
//! let plan = plan_connection(&me, &records[0], &PlanPolicy::default());
//! assert!(matches!(&plan[0].route, Route::Direct(a) if a.to_string() == "tcp://10.0.0.1:7000"));
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod address;
pub mod discovery;
pub mod memory;
pub mod plan;
pub mod queue;
pub mod record;
pub mod rendezvous;
pub mod selector;
pub mod static_file;
pub mod validate;

pub use address::{AddressError, GatewayAddress, Scheme};
pub use discovery::{Discovery, DiscoveryError, DiscoveryEvent, RefuseReason, RequestId};
pub use memory::{HandleConfig, MemoryDiscovery, MemoryRegistry};
pub use plan::{Candidate, PlanPolicy, Reason, RelayPreference, Route, plan_connection};
pub use queue::{EventQueue, watch_events};
pub use record::{
    Gateway, GatewayMatch, Host, HostMatch, KEY_AREA_DISTRICT, KEY_AREA_REGION, KEY_AREA_ZONE_ID,
    Metadata, MetadataMatch, NodeRecord, RecordError, RecordLimits, RelayRef, same_machine,
    same_process,
};
pub use selector::{Operator, Requirement, Selector, SelectorError, matches_optional};
pub use static_file::{StaticFileError, parse_static_records};
pub use validate::{Problem, ValidationError, ValidationErrors};
