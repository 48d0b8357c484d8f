//! proptest strategies for the protocol messages (feature `proptest`), shared by the tests of
//! every layer.

use bytes::Bytes;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;

use crate::{
    AcknowledgeData, CloseReasonData, ForwardErrorData, FrameMessage, HandshakeData,
    HandshakeHello, MessageHead, PacketContent, PacketData, PacketNumberRange, PingData,
    RelayedHandshakeData, StreamAcknowledge, frame_message::Body, handshake_data::Step,
    packet_content::FragmentType,
};

/// Short strings of the kind node names and labels are made of (not validated).
pub fn name() -> impl Strategy<Value = String> {
    "[a-z0-9.-]{0,12}"
}

/// Arbitrary bytes up to `max` long.
pub fn payload(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..=max).prop_map(Bytes::from)
}

/// A message head.
pub fn message_head() -> impl Strategy<Value = MessageHead> {
    (name(), name(), name(), any::<i64>(), any::<i32>()).prop_map(
        |(source, destination, forward_for_source, forward_for_connection_id, hop_count)| {
            MessageHead {
                source,
                destination,
                forward_for_source,
                forward_for_connection_id,
                hop_count,
            }
        },
    )
}

/// A fragment of a packet_content.
pub fn fragment(max_data: usize) -> impl Strategy<Value = FragmentType> {
    (
        any::<i32>(),
        payload(max_data),
        0..2i32,
        btree_map(name(), name(), 0..3),
    )
        .prop_map(|(packet_type, data, fragment_flag, labels)| FragmentType {
            packet_type,
            data,
            fragment_flag,
            labels,
            ..Default::default()
        })
}

/// A packet_content of a few fragments.
pub fn packet_content(max_data: usize) -> impl Strategy<Value = PacketContent> {
    vec(fragment(max_data), 0..4).prop_map(|fragment| PacketContent { fragment })
}

/// A packet_data whose content is arbitrary bytes.
pub fn packet_data(max_content: usize) -> impl Strategy<Value = PacketData> {
    (
        (any::<i64>(), any::<i64>(), payload(max_content)),
        (
            any::<i32>(),
            any::<i32>(),
            any::<i64>(),
            any::<i64>(),
            any::<i64>(),
        ),
    )
        .prop_map(
            |(
                (stream_id, stream_offset, content),
                (flags, padding_size, timepoint_microseconds, packet_number, path_id),
            )| PacketData {
                stream_id,
                stream_offset,
                content,
                flags,
                padding_size,
                timepoint_microseconds,
                packet_number,
                path_id,
            },
        )
}

/// An acknowledge_data.
pub fn acknowledge() -> impl Strategy<Value = AcknowledgeData> {
    let stream = (
        any::<i64>(),
        any::<i64>(),
        any::<i64>(),
        any::<i64>(),
        any::<bool>(),
    )
        .prop_map(
            |(stream_id, acknowledge_offset, received_max_offset, max_stream_offset, closed)| {
                StreamAcknowledge {
                    stream_id,
                    acknowledge_offset,
                    received_max_offset,
                    max_stream_offset,
                    closed,
                }
            },
        );
    let range =
        (any::<i64>(), any::<i64>()).prop_map(|(first, last)| PacketNumberRange { first, last });
    (
        vec(stream, 0..4),
        any::<i64>(),
        vec(range, 0..4),
        any::<i64>(),
        any::<i64>(),
        any::<i64>(),
    )
        .prop_map(
            |(streams, path_id, received_packets, ack_delay, echo, max_session_data)| {
                AcknowledgeData {
                    streams,
                    path_id,
                    received_packets,
                    ack_delay_microseconds: ack_delay,
                    echo_timepoint_microseconds: echo,
                    max_session_data,
                }
            },
        )
}

/// A handshake hello.
pub fn handshake_hello() -> impl Strategy<Value = HandshakeHello> {
    (
        name(),
        name(),
        any::<i64>(),
        payload(32),
        any::<i64>(),
        any::<i32>(),
    )
        .prop_map(
            |(node_name, namespace_name, incarnation_id, nonce, capabilities, protocol_version)| {
                HandshakeHello {
                    protocol_version,
                    node_name,
                    namespace_name,
                    incarnation_id,
                    nonce,
                    capabilities,
                    ..Default::default()
                }
            },
        )
}

/// Any frame body.
pub fn body(max_content: usize) -> impl Strategy<Value = Body> {
    let ping =
        (any::<i64>(), any::<i64>()).prop_map(|(ping_id, timepoint_microseconds)| PingData {
            ping_id,
            timepoint_microseconds,
        });
    prop_oneof![
        ping.clone().prop_map(Body::Ping),
        ping.prop_map(Body::Pong),
        packet_data(max_content).prop_map(Body::Packet),
        acknowledge().prop_map(Body::Acknowledge),
        handshake_hello().prop_map(|h| Body::Handshake(HandshakeData {
            step: Some(Step::Hello(h)),
            cookie: Bytes::new(),
        })),
        (any::<i32>(), name())
            .prop_map(|(code, message)| Body::LinkClose(CloseReasonData { code, message })),
        (any::<i32>(), name(), name()).prop_map(|(code, destination, message)| Body::ForwardError(
            ForwardErrorData {
                code,
                destination,
                message
            }
        )),
        handshake_hello().prop_map(|h| Body::RelayedHandshake(RelayedHandshakeData {
            step: Some(crate::relayed_handshake_data::Step::Hello(h)),
        })),
    ]
}

/// Any frame_message with content up to `max_content` bytes.
pub fn frame_message(max_content: usize) -> impl Strategy<Value = FrameMessage> {
    (
        proptest::option::of(message_head()),
        proptest::option::of(body(max_content)),
    )
        .prop_map(|(head, body)| FrameMessage { head, body })
}
