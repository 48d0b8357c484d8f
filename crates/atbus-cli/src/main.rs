//! The `atbus` command line.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use atbus_cli::discovery::{GatewayArg, Spec, SpecError};
use atbus_cli::inspect::{self, InspectError, Options, Stats};
use atbus_cli::reassemble::{self, DEFAULT_MAX_BUFFERED};
use atbus_discovery::{RelayPreference, Selector};
use atbus_frame::{DEFAULT_MAX_FRAME_LENGTH, FrameLimits};
use atbus_transport_mio::Url;
use clap::{Args, CommandFactory, Parser, Subcommand};

/// The sample capture shipped in `samples/`, embedded for `atbus demo`.
const SAMPLE_CAPTURE: &[u8] = include_bytes!("../../../samples/capture.bin");

/// libatbus-rs command line: a message bus for server processes.
#[derive(Debug, Parser)]
#[command(name = "atbus", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Dissect captured atbus packages and print one JSON object per package (JSON Lines)
    #[command(after_long_help = INSPECT_HELP)]
    Inspect(InspectArgs),
    /// Runs nodes over mem://, unix://, tcp:// and udp:// in this process, checks every echo and
    /// prints throughput, round trips and the links used; then a simulated multi-path session
    Demo(DemoArgs),
    /// Run a node on real sockets until SIGINT/SIGTERM; prints `listening on URL` per listener
    #[command(after_long_help = NODE_HELP)]
    Node(NodeArgs),
    /// Send numbered messages to an echo node, check the echoes and print a summary
    #[command(after_long_help = SEND_HELP)]
    Send(SendArgs),
    /// Service discovery: list the registered node records
    Discovery(DiscoveryArgs),
    /// Signed access tokens: issue one bound to a node name, streams and a validity period, or
    /// verify one and print its claims
    Token {
        /// What to do with tokens
        #[command(subcommand)]
        command: atbus_cli::token_issue::TokenCommand,
    },
    /// Run a relay on real sockets until SIGINT/SIGTERM: forwards frames between nodes and
    /// relays, with a Prometheus metrics endpoint
    #[command(after_long_help = atbus_cli::relay::RELAY_HELP)]
    Relay(atbus_cli::relay::RelayArgs),
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Also walk through the wire format: dissect the built-in sample capture package by package
    #[arg(long)]
    tour: bool,
}

/// Token options shared by `node` and `send`.
#[derive(Debug, Args)]
struct TokenArgs {
    /// Access token `KEY_ID:SECRET` (no colon: key id `default`); repeat for rotation. Tokens on
    /// a command line are visible to other users of the machine (ps, /proc): prefer
    /// --token-file or the ATBUS_TOKEN environment variable
    #[arg(long = "token", value_name = "TOKEN", conflicts_with = "token_file")]
    tokens: Vec<String>,
    /// File with one token per line (`KEY_ID:SECRET`; blank lines and `#` comments skipped),
    /// or a signed token: its `atbus1.…` text, or the JSON `atbus token issue --json` prints
    /// (token and holder secret)
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Holder secret (base64url) of a signed `--token atbus1.…`
    #[arg(long, value_name = "B64")]
    holder_secret: Option<String>,
}

/// Content protection options of `atbus node` and `atbus send`.
#[derive(Args, Debug)]
struct ContentArgs {
    /// Content protection of every session: none, psk (sealed with keys from the token
    /// handshake: needs --auth 1rtt|0rtt and tokens) or tls (keys from a TLS 1.3 handshake in
    /// the link handshake: needs --tls-ca, and --tls-cert/--tls-key to accept links). Both
    /// ends must use the same mode; a mismatch is refused when the link is set up
    #[arg(long, value_name = "none|psk|tls", default_value = "none")]
    encrypt: atbus_node::EncryptionMode,
    /// With --encrypt tls: this node's certificate chain (PEM, leaf first). The leaf names the
    /// node with the URI SAN atbus://NAMESPACE/NAME; peers refuse any other
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// With --encrypt tls: the private key of --tls-cert (PEM, PKCS#8, SEC1 or PKCS#1)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// With --encrypt tls: the CA certificates (PEM) peers' certificates must chain to
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// With --encrypt tls: refuse clients that present no certificate (mutual TLS). Without it
    /// a client without a certificate is served and only its tokens (if any) identify it
    #[arg(long)]
    tls_require_client_cert: bool,
    /// Compress content with LZ4 above 256 bytes when the peer asks for it too (off by
    /// default: compressing secrets next to attacker-chosen bytes leaks them through sizes)
    #[arg(long)]
    compress: bool,
    /// Pad sealed content to multiples of 64 bytes, the padding length inside the ciphertext
    #[arg(long)]
    pad: bool,
}

impl ContentArgs {
    /// The node's content policy, or the exit code after a clear error.
    fn policy(&self, has_credentials: bool) -> Result<atbus_node::ContentPolicy, ExitCode> {
        use atbus_node::EncryptionMode;
        match self.encrypt {
            EncryptionMode::Psk if !has_credentials => {
                eprintln!(
                    "atbus: error: --encrypt psk takes its keys from the token handshake: give \
                     a token (--token, --token-file or ATBUS_TOKEN) or --token-keyring, with \
                     --auth 1rtt or 0rtt"
                );
                return Err(ExitCode::from(2));
            }
            _ => {}
        }
        if self.pad && self.encrypt == EncryptionMode::None {
            eprintln!(
                "atbus: error: --pad pads sealed content only: it needs --encrypt psk or tls"
            );
            return Err(ExitCode::from(2));
        }
        let tls_flags = self.tls_cert.is_some()
            || self.tls_key.is_some()
            || self.tls_ca.is_some()
            || self.tls_require_client_cert;
        if tls_flags && self.encrypt != EncryptionMode::Tls {
            eprintln!(
                "atbus: error: --tls-cert, --tls-key, --tls-ca and --tls-require-client-cert are \
                 used with --encrypt tls"
            );
            return Err(ExitCode::from(2));
        }
        Ok(atbus_node::ContentPolicy {
            encryption: self.encrypt,
            compression: self.compress,
            pad: self.pad,
            ..atbus_node::ContentPolicy::default()
        })
    }
}

impl ContentArgs {
    /// The TLS configuration of `--encrypt tls` from the PEM files (`None` in other modes), or
    /// the exit code after a clear error. `serves`: the node accepts links, so it needs a
    /// certificate. Warns when the certificate does not name `namespace`/`name`.
    fn tls(
        &self,
        serves: bool,
        namespace: &str,
        name: &str,
    ) -> Result<Option<atbus_auth::tls::TlsConfig>, ExitCode> {
        if self.encrypt != atbus_node::EncryptionMode::Tls {
            return Ok(None);
        }
        let fail = |message: String| {
            eprintln!("atbus: error: {message}");
            ExitCode::from(2)
        };
        let Some(ca) = &self.tls_ca else {
            return Err(fail(
                "--encrypt tls needs --tls-ca FILE (the CA peers' certificates chain to)".into(),
            ));
        };
        if serves && self.tls_cert.is_none() {
            return Err(fail(
                "--encrypt tls on a listening node needs --tls-cert FILE and --tls-key FILE".into(),
            ));
        }
        if self.tls_require_client_cert && self.tls_cert.is_none() {
            return Err(fail(
                "--tls-require-client-cert applies to a node that accepts links: give \
                 --tls-cert and --tls-key"
                    .into(),
            ));
        }
        let read = |flag: &str, path: &PathBuf| {
            std::fs::read(path)
                .map_err(|e| fail(format!("cannot read {flag} {}: {e}", path.display())))
        };
        let ca_pem = read("--tls-ca", ca)?;
        let cert_pem = self
            .tls_cert
            .as_ref()
            .map(|p| read("--tls-cert", p))
            .transpose()?;
        let key_pem = self
            .tls_key
            .as_ref()
            .map(|p| read("--tls-key", p))
            .transpose()?;
        let config = atbus_auth::tls::TlsConfig::from_pem(
            cert_pem.as_deref(),
            key_pem.as_deref(),
            &ca_pem,
            self.tls_require_client_cert,
        )
        .map_err(|e| fail(format!("--tls-cert/--tls-key/--tls-ca: {e}")))?;
        let ours = atbus_auth::tls::AtbusIdentity::new(namespace, name);
        if config.identities().is_empty() && self.tls_cert.is_some() {
            eprintln!(
                "atbus: warning: the --tls-cert certificate has no atbus:// URI SAN; peers will \
                 refuse it (tls-no-atbus-identity)"
            );
        } else if !config.identities().is_empty() && !config.identities().contains(&ours) {
            let named: Vec<String> = config.identities().iter().map(|i| i.to_string()).collect();
            eprintln!(
                "atbus: warning: the --tls-cert certificate names {}, not {ours}; peers will \
                 refuse it (tls-identity-mismatch)",
                named.join(", ")
            );
        }
        Ok(Some(config))
    }
}

#[derive(Args, Debug)]
struct NodeArgs {
    /// Node name (DNS-1123 subdomain)
    #[arg(long)]
    name: String,
    /// Address to listen on: tcp://HOST:PORT, udp://HOST:PORT, unix:///PATH or mem://NAME
    /// (port 0 binds a free port); repeatable
    #[arg(long, value_name = "URL", required = true)]
    listen: Vec<Url>,
    /// Peer to connect to (reconnected with backoff); repeatable
    #[arg(long, value_name = "URL")]
    connect: Vec<Url>,
    /// Namespace (DNS-1123 label)
    #[arg(long, value_name = "NS", default_value = "")]
    namespace: String,
    #[command(flatten)]
    tokens: TokenArgs,
    #[command(flatten)]
    content: ContentArgs,
    /// Send every received message back to its sender on the same stream
    #[arg(long)]
    echo: bool,
    /// Read lines `NAME MESSAGE` from standard input and send MESSAGE to node NAME (stream 1);
    /// a name with no session is found through --discovery and reached as the connection
    /// planner says. Prints `from NAME stream N: MESSAGE`, `route to NAME: direct|via RELAY`
    /// and `undeliverable to NAME: …`
    #[arg(long)]
    stdin: bool,
    /// Register the node in discovery: etcd://HOST:PORT[,…], etcds://HOST:PORT[,…]?ca=FILE
    /// [&cert=FILE&key=FILE] (TLS), static:FILE or embedded (local to this process). Without it
    /// the node registers nowhere
    #[arg(long, value_name = "SPEC", value_parser = parse_spec)]
    discovery: Option<Spec>,
    /// Label KEY=VALUE of the node's record; repeatable
    #[arg(long = "label", value_name = "KEY=VALUE", requires = "discovery",
          value_parser = atbus_cli::discovery::parse_label)]
    labels: Vec<(String, String)>,
    /// Extra gateway URL[@PRIORITY] published for every caller (priority 0 when not given,
    /// higher first); repeatable
    #[arg(
        long = "gateway",
        value_name = "URL[@PRIORITY]",
        requires = "discovery"
    )]
    gateways: Vec<GatewayArg>,
    /// Trust the relay NAME (reached through --connect, or with --discovery at the address
    /// its record gives): accept messages other nodes send through it and answer through it
    #[arg(long, value_name = "NAME")]
    upstream_relay: Option<String>,
    /// Publish NAME in the node's record as the relay to reach it through (advertise_relay);
    /// the node links to it (at the address its record gives) and trusts it
    #[arg(long, value_name = "NAME", requires = "discovery")]
    advertise_relay: Option<String>,
    /// Which relay comes first when this node's traffic goes through a relay: its own
    /// upstream (`own`) or the destination's advertised relay (`target`)
    #[arg(long, value_name = "own|target", value_parser = parse_preference, default_value = "own")]
    relay_preference: RelayPreference,
    /// How peers connecting to this node authenticate (every --listen address): none (open
    /// links accepted), 1rtt (a pre-shared or signed token proved in the handshake), 0rtt
    /// (as 1rtt, and 0-RTT early data accepted once). Default: 1rtt with --token or
    /// --token-keyring, else none
    #[arg(long, value_name = "MODE")]
    auth: Option<atbus_node::AuthMode>,
    /// Accept peers without credentials: each gets an assigned name (anon-…), streams 0-15,
    /// 200 packets/s, and a token to reconnect when --token-keyring is given
    #[arg(long)]
    anonymous: bool,
    /// File with one signing key `KEY_ID:SECRET` per line (`#` comments skipped): verifies the
    /// signed tokens peers present; the first key issues tokens to anonymous peers
    #[arg(long, value_name = "FILE")]
    token_keyring: Option<PathBuf>,
    /// 0-RTT freshness window in seconds: a first flight stamped further from this node's clock
    /// is refused, and so is every 0-RTT flight during the first window after start
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    zero_rtt_window: f64,
}

/// `--relay-preference` for clap.
fn parse_preference(s: &str) -> Result<RelayPreference, String> {
    match s {
        "own" => Ok(RelayPreference::Own),
        "target" => Ok(RelayPreference::Target),
        other => Err(format!("{other:?}: expected own or target")),
    }
}

/// `--discovery` for clap (errors name the bad part).
fn parse_spec(s: &str) -> Result<Spec, SpecError> {
    Spec::parse(s)
}

#[derive(Debug, Args)]
struct DiscoveryArgs {
    #[command(subcommand)]
    command: DiscoveryCommand,
}

#[derive(Debug, Subcommand)]
enum DiscoveryCommand {
    /// Print the records a selector matches, ordered by name
    #[command(after_long_help = DISCOVERY_LIST_HELP)]
    List(ListArgs),
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Where the records are: etcd://HOST:PORT[,…], etcds://HOST:PORT[,…]?ca=FILE
    /// [&cert=FILE&key=FILE] (TLS), static:FILE or embedded
    #[arg(long, value_name = "SPEC", value_parser = parse_spec)]
    discovery: Spec,
    /// Label selector, e.g. `kind=echo,area.region in (eu,us),!debug` (default: every record)
    #[arg(long, value_name = "SELECTOR", value_parser = Selector::parse)]
    selector: Option<Selector>,
    /// One JSON record per line instead of a table
    #[arg(long)]
    json: bool,
}

const DISCOVERY_LIST_HELP: &str = "\
The table has the columns NAME, NAMESPACE, KIND, LABELS (k=v,…) and GATEWAYS (each gateway as
ADDRESS[,ADDRESS…]@PRIORITY, separated by spaces); `-` marks an empty cell. With --json each line
is one record in its own JSON form (the value stored in etcd).

Exit status: 0 on success (even when nothing matches), 1 when the backend failed, 2 on bad
arguments (a selector or spec that does not parse, an unreadable or invalid static file).

Examples:
  atbus discovery list --discovery static:nodes.toml --selector 'kind=echo'
  atbus discovery list --discovery etcd://127.0.0.1:2379 --json";

#[derive(Debug, Args)]
struct SendArgs {
    /// This node's name (DNS-1123 subdomain)
    #[arg(long)]
    name: String,
    /// Where the echo node (or, with --upstream-relay, the relay) listens; not needed with
    /// --discovery
    #[arg(long, value_name = "URL", required_unless_present = "discovery")]
    connect: Option<Url>,
    /// Name of the echo node
    #[arg(
        long,
        value_name = "DEST",
        required_unless_present = "to_selector",
        conflicts_with = "to_selector"
    )]
    to: Option<String>,
    /// The echo node as a label selector (e.g. `kind=echo`), resolved through --discovery to
    /// one node by rendezvous hashing of --hash-key (default: --name)
    #[arg(long, value_name = "SELECTOR", value_parser = Selector::parse, requires = "discovery")]
    to_selector: Option<Selector>,
    /// The key --to-selector hashes (default: this node's name)
    #[arg(long, value_name = "KEY", requires = "to_selector")]
    hash_key: Option<String>,
    /// Find --to through discovery and connect as the connection planner says (direct, or
    /// through a relay): etcd://HOST:PORT[,…], etcds://…, static:FILE or embedded
    #[arg(long, value_name = "SPEC", value_parser = parse_spec)]
    discovery: Option<Spec>,
    /// This node's namespace (DNS-1123 label); decides which gateways apply to it
    #[arg(long, value_name = "NS", default_value = "", requires = "discovery")]
    namespace: String,
    /// Label KEY=VALUE of this node (gateway matching); repeatable
    #[arg(long = "label", value_name = "KEY=VALUE", requires = "discovery",
          value_parser = atbus_cli::discovery::parse_label)]
    labels: Vec<(String, String)>,
    /// Register this node's record for the run with advertise_relay NAME
    #[arg(long, value_name = "NAME", requires = "discovery")]
    advertise_relay: Option<String>,
    /// With --discovery, which relay the plan tries first: --upstream-relay (`own`) or the
    /// destination's advertised relay (`target`)
    #[arg(long, value_name = "own|target", value_parser = parse_preference, default_value = "own")]
    relay_preference: RelayPreference,
    /// Messages to send
    #[arg(long, value_name = "N", default_value_t = 1000)]
    count: u64,
    /// Bytes per message
    #[arg(long, value_name = "BYTES", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=(64 << 20)))]
    size: u32,
    /// Streams to spread the messages over (round robin)
    #[arg(long, value_name = "K", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=65536))]
    streams: u32,
    /// Most messages in flight; 1 is a strict ping-pong (rtt_* is then the true round trip)
    #[arg(long, value_name = "W", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..))]
    window: u64,
    #[command(flatten)]
    tokens: TokenArgs,
    #[command(flatten)]
    content: ContentArgs,
    /// Compare every byte of every echo (otherwise length and sequence number only)
    #[arg(long)]
    verify: bool,
    /// Print the summary as one line of JSON
    #[arg(long)]
    json: bool,
    /// Give up after this many seconds
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    timeout: u64,
    /// Send through the relay NAME: --connect is the relay's address, and --to a node linked
    /// to it (the summary's first_hop is then NAME); with --discovery, this node's upstream
    /// relay for the connection planner
    #[arg(long, value_name = "NAME")]
    upstream_relay: Option<String>,
    /// Send the first messages (up to the window and 16 KiB) as 0-RTT early data in the first
    /// flight; needs a token. The summary's early_data_accepted says whether the node took them
    /// (otherwise they went again after the handshake)
    #[arg(long)]
    early_data: bool,
    /// Ask the node for an assigned name instead of --name (it must run with --anonymous)
    #[arg(long)]
    anonymous: bool,
}

const NODE_HELP: &str = "\
Tokens: KEY_ID:SECRET (the secret is at least 16 bytes; without a colon the key id is
`default`). Taken from --token, else --token-file, else the ATBUS_TOKEN environment variable;
none means open links (only peers without tokens connect). Tokens on a command line are visible
to other users: prefer --token-file or ATBUS_TOKEN.

Discovery: with --discovery SPEC the node registers its record once its listeners are bound:
version, host name and pid, --namespace, --label KEY=VALUE, its bound listen addresses as a
gateway for callers of its own namespace (for everyone when the namespace is empty; 0.0.0.0 and
[::] are left out), and every --gateway URL[@PRIORITY] for everyone. Registration is
put-if-absent: a name already registered ends the node with status 1. SIGINT/SIGTERM
deregister it; with etcd, a node that dies unexpectedly disappears when its lease expires
(10 s). --advertise-relay NAME publishes NAME as the relay to reach the node through; with no
--connect, the relays named by --advertise-relay and --upstream-relay are linked at the
addresses their records give (with etcd, waiting up to 10 s for them at start). With
`embedded` (or static:FILE) the registry lives inside this process only: nobody else sees the
record.

Logs go to standard error through tracing; set RUST_LOG (for example RUST_LOG=debug).

Examples:
  atbus node --name echo --listen tcp://127.0.0.1:7000 --listen unix:///tmp/echo.sock --echo
  atbus node --name edge-1 --listen tcp://10.0.0.1:7000 --namespace prod \\
    --discovery etcd://127.0.0.1:2379 --label tier=edge --gateway tcp://edge.example.com:443@10";

const SEND_HELP: &str = "\
Message seq goes on stream seq % K; its first min(8, BYTES) bytes are seq (little endian), the
rest a fixed pattern. With --json the summary is one line:
  {\"sent\":1000,\"received\":1000,\"verified\":true,\"corrupted\":0,\"elapsed_s\":0.05,
   \"msgs_per_sec\":20000.0,\"bytes_per_sec\":1280000.0,\"rtt_p50_us\":900,\"rtt_p99_us\":2100,
   \"size\":64,\"streams\":1,\"window\":1000,\"first_hop\":\"echo\",\"to\":\"echo\",\"error\":null}
  received   echoes that matched; verified is true only with --verify when every echo matched
             byte for byte, exactly once, in order per stream
  bytes_per_sec  echoed payload bytes per second (from the first send to the last echo)
A progress bar is drawn on standard error when it is a terminal.
Tokens: as for `atbus node` (--token, --token-file or ATBUS_TOKEN).

Exit status: 0 when every echo came back intact, 1 when something was lost, corrupted or refused
(the reason goes to standard error), 2 on bad arguments.

  first_hop  the peer the messages went to first: --to itself, or the --upstream-relay
  to         the destination (with --to-selector, the node the selector resolved to)
Through a relay: --connect is the relay, --upstream-relay its name; the echo node runs with
--connect to the relay and the same --upstream-relay.

With --discovery SPEC no --connect is needed: the records are listed, --to (or --to-selector,
one matching node chosen by rendezvous hashing of --hash-key, default --name) is found, and
the connection planner orders the ways there from this node's --namespace and --label:
direct addresses, then --upstream-relay and the destination's advertised relay in the order
of --relay-preference (own: upstream first; target: advertised relay first). The first
candidate whose link authenticates within 3 s is used; first_hop names its peer.

Examples:
  atbus send --name client --connect tcp://127.0.0.1:7000 --to echo --count 10000 --verify
  atbus send --name client --connect tcp://127.0.0.1:7100 --upstream-relay relay-1 --to echo
  atbus send --name a --namespace ns1 --discovery etcd://127.0.0.1:2379 \\
    --upstream-relay relay1 --relay-preference target --to b --verify --json
  atbus send --name a --discovery etcd://127.0.0.1:2379 --to-selector app=echo --hash-key user-7";

#[derive(Debug, Args)]
struct InspectArgs {
    /// Capture file to read; `-` or nothing reads standard input. With --reassemble, one or more
    /// files, read in order (for example one per path of a session)
    #[arg(value_name = "FILE", conflicts_with = "hex")]
    files: Vec<PathBuf>,
    /// Follow the streams: feed every packet_data through the session's reassembler and print
    /// each delivered message (or skipped range) once, in delivery order, then a summary per
    /// stream
    #[arg(long)]
    reassemble: bool,
    /// With --reassemble: most bytes held waiting for missing data, across all streams; fragments
    /// beyond are refused and counted as buffer_full_pieces
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_BUFFERED, requires = "reassemble")]
    max_buffered: usize,
    /// The input is datagram records (u32 little-endian length, then one datagram holding one or
    /// more packages) instead of a byte stream
    #[arg(long)]
    datagram: bool,
    /// Take the captured bytes from this hex string (whitespace ignored) instead of a file
    #[arg(long, value_name = "HEX")]
    hex: Option<String>,
    /// Largest frame_message length accepted, in bytes
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_FRAME_LENGTH)]
    max_frame_length: usize,
}

const INSPECT_HELP: &str = "\
Output, one JSON object per line:
  {\"offset\":0,\"version\":1,\"length\":8,\"hash_ok\":true,
   \"frame\":{\"ping\":{\"ping_id\":\"1\",\"timepoint_microseconds\":\"1000000\"}}}
  offset    where the package starts in the input (datagram input: in the whole file)
  datagram  index of the datagram record (with --datagram only)
  length    frame_message length from the package header
  frame     frame_message in the proto3 JSON mapping: the .proto's snake_case field names,
            int64 as strings, bytes as base64, fields at their default value (0, \"\", false,
            empty) omitted, keys sorted
  frame.packet.content_decoded
            the packet's content decoded as packet_content, when it is not ENCRYPTED or
            COMPRESSED and decodes cleanly (padding_size trailing bytes ignored)

A package that does not decode prints {\"offset\":…,\"error_kind\":…,\"error\":…} with error_kind
one of hash_mismatch, unsupported_version, frame_too_long, overlong_varint, truncated, protobuf,
empty_datagram, datagram_too_long. On a byte stream a framing error ends the dissection (package
boundaries are lost), as does input ending inside a package; with --datagram it goes on with the
next datagram.

With --reassemble, the packages themselves are not printed. Every packet_data is fed, per stream
(head.source, head.destination, stream_id), through the receive path of a session (overlaps,
duplicates, reordering, HAS_MORE boundaries, RESET_OFFSET skips, FINISH_STREAM and RESET_STREAM
final sizes); the files are read one after the other. Each delivery prints once, in delivery
order:
  {\"source\":\"node-a\",\"destination\":\"node-b\",\"stream_id\":1,\"offset\":0,\"length\":13,
   \"packet_type\":0,\"labels\":{\"app\":\"chat\"},\"data\":\"aGVsbG8sIG5vZGUtYg==\"}
  {\"source\":…,\"destination\":…,\"stream_id\":1,\"skipped\":{\"offset\":13,\"length\":30}}
  offset, length  the message's place in the stream; data is base64, labels keys sorted, and
                  \"options\" appears when the message has any
  skipped         a range the sender gave up on
then one line per stream, sorted:
  {\"stream_summary\":{\"source\":…,\"destination\":…,\"stream_id\":1,\"delivered_messages\":1,
   \"delivered_bytes\":13,\"skipped_bytes\":0,\"final_size\":null,\"finished\":false,
   \"gaps\":[[13,20]],\"pending_bytes\":23,\"read_offset\":13,\"received_max\":43,
   \"undecodable_packets\":0,\"buffer_full_pieces\":0,\"errors\":0}}
  gaps                 [start,end) ranges still missing above read_offset (everything below it
                       was delivered or skipped), up to received_max or the final size
  pending_bytes        bytes received there, waiting for the gaps
  undecodable_packets  ENCRYPTED or COMPRESSED packets, or content that is not a packet_content
  buffer_full_pieces   fragments refused because of --max-buffered
Each stream's state also counts against --max-buffered (512 bytes plus its names); once it is
spent, packets of new streams are not followed and a last line {\"untracked_streams\":{\"packets\":…}}
counts them.
Error lines gain a leading \"file\" field; a packet the session would refuse prints
{\"file\":…,\"offset\":…,\"source\":…,\"destination\":…,\"stream_id\":…,\"error_kind\":…,\"error\":…}
with error_kind reassembly (data past the final size, a changed final size) or protocol (negative
stream_id or stream_offset, unknown flag bits). Gaps alone are not errors.

Exit status: 0 when every package decoded, 1 when an error line was printed, 2 when the input
could not be read or the arguments are wrong.

Examples:
  atbus inspect samples/capture.bin
  atbus inspect --datagram samples/capture-datagrams.bin
  atbus inspect --hex '01 08 2a06080110c0843d 06d59d8d'
  atbus inspect - < stream.bin
  atbus inspect --reassemble path1.bin path2.bin";

/// `atbus demo`: nodes on real sockets, the session over simulated paths, and with `--tour` the
/// dissection. Any message not verified makes it fail (status 1).
fn run_demo(args: &DemoArgs) -> Result<Stats, InspectError> {
    init_tracing("warn");
    let failed = Stats {
        errors: 1,
        ..Stats::default()
    };
    let mut out = BufWriter::new(io::stdout().lock());
    let nodes = match atbus_cli::demo_nodes::run(&mut out) {
        Ok(report) => report,
        Err(err) => {
            let _ = out.flush();
            eprintln!("atbus: error: the nodes demo failed: {err:#}");
            return Ok(failed);
        }
    };
    let report = atbus_cli::demo_session::run(&mut out).map_err(InspectError::Write)?;
    let mut ok = true;
    if !nodes.all_verified() {
        ok = false;
        let _ = out.flush();
        eprintln!(
            "atbus: error: only {} of {} messages came back intact over the sockets",
            nodes.verified, nodes.sent
        );
    }
    if report.verified != report.sent {
        ok = false;
        let _ = out.flush();
        eprintln!(
            "atbus: error: only {} of {} messages were delivered intact",
            report.verified, report.sent
        );
    }
    if !ok {
        return Ok(failed);
    }
    if !args.tour {
        writeln!(
            out,
            "Everything verified. `atbus demo --tour` also dissects a capture package by package;\n\
             run nodes yourself with `atbus node` and `atbus send` (see the README)."
        )
        .and_then(|()| out.flush())
        .map_err(InspectError::Write)?;
        return Ok(Stats::default());
    }
    writeln!(out, "Part 3: what it looks like on the wire").map_err(InspectError::Write)?;
    writeln!(out).map_err(InspectError::Write)?;
    atbus_cli::demo::run(SAMPLE_CAPTURE, out)
}

/// Logs to standard error, filtered by `RUST_LOG` (default: `default_level`).
fn init_tracing(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .try_init();
}

fn tokens(args: &TokenArgs) -> Result<Vec<atbus_node::AccessToken>, ExitCode> {
    atbus_cli::token::collect(&args.tokens, args.token_file.as_deref()).map_err(|err| {
        eprintln!("atbus: error: {err}");
        ExitCode::from(2)
    })
}

/// Pre-shared tokens and the signed token (`atbus1.…` in --token or --token-file).
type Credentials = (
    Vec<atbus_node::AccessToken>,
    Option<atbus_node::SignedToken>,
);

fn credentials(args: &TokenArgs) -> Result<Credentials, ExitCode> {
    let fail = |err: &dyn std::fmt::Display| {
        eprintln!("atbus: error: {err:#}");
        ExitCode::from(2)
    };
    let holder = args.holder_secret.as_deref();
    if let Some(text) = args.tokens.iter().find(|t| t.starts_with("atbus1.")) {
        let signed = atbus_cli::send::signed_token(text, holder).map_err(|e| fail(&e))?;
        let rest: Vec<String> = args
            .tokens
            .iter()
            .filter(|t| !t.starts_with("atbus1."))
            .cloned()
            .collect();
        let psk = atbus_cli::token::collect(&rest, None).map_err(|e| fail(&e))?;
        return Ok((psk, Some(signed)));
    }
    if let Some(path) = &args.token_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| fail(&format!("token file {}: {e}", path.display())))?;
        let first = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .unwrap_or_default();
        if first.starts_with('{') || first.starts_with("atbus1.") {
            let body = if first.starts_with('{') {
                text.as_str()
            } else {
                first
            };
            let signed = atbus_cli::send::signed_token(body, holder).map_err(|e| fail(&e))?;
            return Ok((Vec::new(), Some(signed)));
        }
    }
    Ok((tokens(args)?, None))
}

fn token_keyring(path: &Path) -> Result<atbus_node::atbus_auth::TokenKeyring, ExitCode> {
    let keys: Vec<String> = match std::fs::read_to_string(path) {
        Ok(text) => text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect(),
        Err(err) => {
            eprintln!("atbus: error: token key ring {}: {err}", path.display());
            return Err(ExitCode::from(2));
        }
    };
    atbus_cli::token_issue::keyring(&keys, Default::default()).map_err(|err| {
        eprintln!("atbus: error: token key ring {}: {err}", path.display());
        ExitCode::from(2)
    })
}

fn run_node(args: NodeArgs) -> ExitCode {
    init_tracing("info");
    let (tokens, signed_token) = match credentials(&args.tokens) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let token_keyring = match args.token_keyring.as_deref().map(token_keyring).transpose() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let has_credentials = !tokens.is_empty() || signed_token.is_some() || token_keyring.is_some();
    let content = match args.content.policy(has_credentials) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let tls = match args.content.tls(true, &args.namespace, &args.name) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let auth = atbus_cli::node::AuthOptions {
        content,
        tls,
        auth: args.auth,
        anonymous: args.anonymous,
        token_keyring,
        signed_token,
        zero_rtt_window: Duration::try_from_secs_f64(args.zero_rtt_window).ok(),
    };
    let stop = atbus_cli::node::StopSignal::new();
    if let Err(err) = atbus_cli::relay::watch_signals(stop.clone()) {
        eprintln!("atbus: error: cannot install the signal handler: {err}");
        return ExitCode::from(2);
    }
    let options = atbus_cli::node::Options {
        name: args.name,
        namespace: args.namespace,
        listen: args.listen,
        connect: args.connect,
        tokens,
        echo: args.echo,
        discovery: args.discovery,
        labels: args.labels.into_iter().collect(),
        gateways: args.gateways,
        upstream_relay: args.upstream_relay,
        advertise_relay: args.advertise_relay,
        relay_preference: args.relay_preference,
    };
    let result = if args.stdin {
        let (lines, input) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in io::stdin().lines() {
                let Ok(line) = line else { break };
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        atbus_cli::node::run_with_input(&options, &auth, input, &stop, &mut io::stdout())
    } else {
        atbus_cli::node::run_with_auth(&options, &auth, &stop, &mut io::stdout())
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("atbus: error: {err:#}");
            ExitCode::from(1)
        }
    }
}

fn run_discovery_list(args: ListArgs) -> ExitCode {
    init_tracing("warn");
    let mut backend = match args.discovery.open() {
        Ok(b) => b,
        Err(err) => {
            eprintln!("atbus: error: {err}");
            return ExitCode::from(2);
        }
    };
    let selector = args.selector.unwrap_or_else(Selector::everything);
    let records = backend.list(&selector);
    backend.shutdown();
    let records = match records {
        Ok(r) => r,
        Err(err) => {
            eprintln!("atbus: error: cannot list {}: {err}", args.discovery);
            return ExitCode::from(1);
        }
    };
    let mut out = BufWriter::new(io::stdout().lock());
    let written = if args.json {
        atbus_cli::discovery::write_json(&records, &mut out)
    } else {
        atbus_cli::discovery::write_table(&records, &mut out)
    }
    .and_then(|()| out.flush());
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("atbus: error: {err}");
            ExitCode::from(1)
        }
    }
}

fn run_send(args: SendArgs) -> ExitCode {
    init_tracing("warn");
    let (tokens, signed_token) = match credentials(&args.tokens) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let mut planned = None;
    let (connect, to) = match &args.discovery {
        Some(spec) => {
            let lookup = atbus_cli::send::Lookup {
                spec: spec.clone(),
                namespace: args.namespace.clone(),
                labels: args.labels.iter().cloned().collect(),
                upstream_relay: args.upstream_relay.clone(),
                advertise_relay: args.advertise_relay.clone(),
                relay_preference: args.relay_preference,
                to: args.to.clone(),
                to_selector: args.to_selector.clone(),
                hash_key: args.hash_key.clone(),
            };
            let p = match atbus_cli::send::plan(&args.name, &lookup) {
                Ok(p) => p,
                Err(err) => {
                    eprintln!("atbus: error: {err:#}");
                    return ExitCode::from(1);
                }
            };
            for why in &p.skipped {
                tracing::warn!(%why, "candidate skipped");
            }
            let Some(first) = p.hops.first() else {
                eprintln!(
                    "atbus: error: no way to reach {:?} from the records of {spec}{}",
                    p.to,
                    if p.skipped.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", p.skipped.join("; "))
                    }
                );
                return ExitCode::from(1);
            };
            let hop = (first.url.clone(), p.to.clone());
            planned = Some(p);
            hop
        }
        None => match (args.connect, args.to) {
            (Some(c), Some(t)) => (c, t),
            _ => {
                eprintln!("atbus: error: --connect and --to are needed without --discovery");
                return ExitCode::from(2);
            }
        },
    };
    let content = match args
        .content
        .policy(!tokens.is_empty() || signed_token.is_some())
    {
        Ok(c) => c,
        Err(code) => return code,
    };
    let tls = match args.content.tls(false, "", &args.name) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let auth = atbus_cli::send::ClientAuth {
        content,
        tls,
        signed_token,
        early_data: args.early_data,
        anonymous: args.anonymous,
    };
    let options = atbus_cli::send::Options {
        name: args.name,
        connect,
        to,
        count: args.count,
        size: args.size as usize,
        streams: args.streams,
        window: args.window,
        tokens,
        verify: args.verify,
        timeout: Duration::from_secs(args.timeout),
        progress: io::stderr().is_terminal(),
    };
    if planned.is_some() && (auth.signed_token.is_some() || auth.early_data || auth.anonymous) {
        eprintln!(
            "atbus: error: signed tokens, --early-data and --anonymous are not supported with \
             --discovery yet: give --connect and --to"
        );
        return ExitCode::from(2);
    }
    let report = match &mut planned {
        Some(p) => {
            let report = atbus_cli::send::run_planned(&options, &p.hops);
            if p.registered {
                if let Err(err) = p.backend.deregister(&options.name, Duration::from_secs(3)) {
                    tracing::warn!(%err, "deregister failed");
                }
            }
            p.backend.shutdown();
            report
        }
        None => atbus_cli::send::run_with_auth(&options, args.upstream_relay.as_deref(), &auth),
    };
    let report = match report {
        Ok(r) => r,
        Err(err) => {
            eprintln!("atbus: error: {err:#}");
            return ExitCode::from(1);
        }
    };
    if args.json {
        match serde_json::to_string(&report) {
            Ok(line) => println!("{line}"),
            Err(err) => eprintln!("atbus: error: {err}"),
        }
    } else {
        println!(
            "sent {} received {} corrupted {} verified {} in {:.3} s: {:.0} msgs/s, {:.0} bytes/s, rtt p50 {} us p99 {} us",
            report.sent,
            report.received,
            report.corrupted,
            report.verified,
            report.elapsed_s,
            report.msgs_per_sec,
            report.bytes_per_sec,
            report.rtt_p50_us,
            report.rtt_p99_us
        );
    }
    if let Some(error) = &report.error {
        eprintln!("atbus: error: {error}");
    }
    if report.is_success(options.count) {
        ExitCode::SUCCESS
    } else {
        if report.error.is_none() {
            eprintln!(
                "atbus: error: {} of {} echoes received, {} corrupted",
                report.received, options.count, report.corrupted
            );
        }
        ExitCode::from(1)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(args) => run_inspect(args),
        Command::Demo(args) => run_demo(&args),
        Command::Node(args) => return run_node(args),
        Command::Send(args) => return run_send(args),
        Command::Discovery(DiscoveryArgs {
            command: DiscoveryCommand::List(args),
        }) => return run_discovery_list(args),
        Command::Token { command } => return run_token(&command),
        Command::Relay(args) => return atbus_cli::relay::main(&args),
    };
    match result {
        Ok(stats) if stats.is_clean() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        // `atbus inspect big.bin | head`: the reader left, nothing more to say.
        Err(InspectError::Write(err)) if err.kind() == io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("atbus: error: {err}");
            ExitCode::from(2)
        }
    }
}

/// `atbus token issue|verify`: runs at the current Unix time; errors go to stderr with status 1.
fn run_token(command: &atbus_cli::token_issue::TokenCommand) -> ExitCode {
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match atbus_cli::token_issue::run_command(command, now_unix, &mut io::stdout()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("atbus: error: {err}");
            ExitCode::from(1)
        }
    }
}

/// Exits with a usage error of `atbus inspect` (status 2).
fn usage_error(kind: clap::error::ErrorKind, message: &str) -> ! {
    let mut cli = Cli::command();
    cli.build();
    match cli.find_subcommand_mut("inspect") {
        Some(inspect) => inspect.error(kind, message).exit(),
        None => cli.error(kind, message).exit(),
    }
}

/// Opens `path` (`-`: standard input).
fn open(path: &Path) -> Result<Box<dyn Read>, InspectError> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(io::stdin().lock()));
    }
    let file = File::open(path).map_err(|err| {
        InspectError::Read(io::Error::new(
            err.kind(),
            format!("{}: {err}", path.display()),
        ))
    })?;
    Ok(Box::new(file))
}

fn run_inspect(args: InspectArgs) -> Result<Stats, InspectError> {
    if !args.reassemble && args.files.len() > 1 {
        usage_error(
            clap::error::ErrorKind::TooManyValues,
            "more than one FILE needs --reassemble",
        );
    }
    if args.files.iter().filter(|p| p.as_os_str() == "-").count() > 1 {
        usage_error(
            clap::error::ErrorKind::ArgumentConflict,
            "standard input (`-`) can be read only once",
        );
    }
    let options = Options {
        datagram: args.datagram,
        limits: FrameLimits {
            max_frame_length: args.max_frame_length,
        },
    };
    let mut inputs: Vec<(String, Box<dyn Read>)> = Vec::new();
    if let Some(hex) = &args.hex {
        inputs.push((
            "hex".into(),
            Box::new(io::Cursor::new(inspect::parse_hex(hex)?)),
        ));
    } else if args.files.is_empty() {
        inputs.push(("-".into(), Box::new(io::stdin().lock())));
    } else {
        for path in &args.files {
            inputs.push((path.display().to_string(), open(path)?));
        }
    }
    let out = BufWriter::new(io::stdout().lock());
    let stats = if args.reassemble {
        let options = reassemble::Options {
            inspect: options,
            max_buffered: args.max_buffered,
        };
        reassemble::reassemble(inputs, out, &options)?
    } else {
        let Some((_, input)) = inputs.pop() else {
            unreachable!("one input at least");
        };
        inspect::inspect(input, out, &options)?
    };
    if !stats.is_clean() {
        eprintln!(
            "atbus: {} packages decoded, {} errors",
            stats.packages, stats.errors
        );
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }
}
