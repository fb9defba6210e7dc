//! The Kafka listener: frames, the request header, dispatch, and responses
//! in request order per connection.
//!
//! A frame is a big-endian i32 length and that many bytes. The length is
//! checked before anything is read or allocated for it (negative, shorter
//! than a header, or over `kafka_max_frame_bytes`: the connection closes),
//! and the body is read as it arrives, so a client that claims 100 MiB and
//! sends 10 bytes holds 10 bytes. Anything the node cannot answer — an
//! unknown API key, a version not served, a frame that does not decode —
//! closes the connection with a log line, as a Kafka broker does, except
//! ApiVersions at an unknown version, which gets the list of versions
//! (KIP-511).
//!
//! Requests of one connection are handled concurrently (a client
//! pipelines them: librdkafka keeps many produce requests in flight per
//! broker), and their responses written in the order the requests came:
//! the reader hands each request's task to the writer through a bounded
//! queue, and the writer awaits them in turn.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::{
    admin, describe_configs, fetch, find_coordinator, groups, init_producer, list_offsets, metadata, offsets, produce,
    versions,
};
use crate::node::Node;
use crate::security::conn::{PerIp, Slot};

/// Requests of one connection being handled at once; the reader waits
/// for the oldest answer beyond this.
const MAX_IN_FLIGHT: usize = 64;
/// The shortest frame that holds what is read before the header is
/// decoded: API key, version and correlation id.
const MIN_FRAME: usize = 8;

/// Accepts Kafka connections on `listener` until `stop` resolves; at most
/// `max_connections_per_ip` per client address (counted apart from the
/// gRPC listener's).
pub async fn serve(listener: TcpListener, node: Arc<Node>, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    let per_ip = PerIp::new(node.config.max_connections_per_ip);
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    let Ok(slot) = per_ip.take(peer.ip()) else {
                        debug!(%peer, "kafka connection refused: too many from this address");
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(connection(stream, peer, node.clone(), slot));
                }
                Err(e) => {
                    // Out of descriptors, typically: wait a little rather
                    // than spin.
                    warn!(error = %e, "kafka listener: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = &mut stop => return,
        }
    }
}

/// A decoded request.
pub struct Request {
    pub key: ApiKey,
    pub version: i16,
    pub header: RequestHeader,
    pub body: RequestKind,
}

/// What the reader makes of one frame.
pub enum Frame {
    Request(Box<Request>),
    /// ApiVersions at a version not spoken: answered at v0 with the list.
    UnsupportedApiVersions {
        correlation_id: i32,
    },
}

/// Why a connection is closed.
#[derive(Debug, thiserror::Error)]
pub enum Close {
    #[error("frame length {0} is negative")]
    Negative(i32),
    #[error("frame length {len} is over the limit of {limit} bytes")]
    TooLong { len: usize, limit: usize },
    #[error("frame length {0} is shorter than a request header")]
    TooShort(usize),
    #[error("connection ended inside a frame")]
    Truncated,
    #[error("unknown API key {0}")]
    UnknownKey(i16),
    #[error("{key:?} v{version} is not served")]
    Version { key: ApiKey, version: i16 },
    #[error("{key:?} v{version} does not decode: {reason}")]
    Undecodable { key: ApiKey, version: i16, reason: String },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

async fn connection(stream: TcpStream, peer: SocketAddr, node: Arc<Node>, _slot: Option<Slot>) {
    debug!(%peer, "kafka connection");
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<JoinHandle<Answer>>(MAX_IN_FLIGHT);
    let writer = tokio::spawn(async move {
        while let Some(task) = rx.recv().await {
            match task.await {
                Ok(Answer::Frame(frame)) => {
                    if wr.write_all(&frame).await.is_err() {
                        return;
                    }
                }
                Ok(Answer::Nothing) => {}
                // The client would wait for an answer that never comes:
                // closing makes it retry at once.
                Ok(Answer::Close) => return,
                Err(e) => {
                    warn!(%peer, error = %e, "kafka request task failed; closing the connection");
                    return;
                }
            }
        }
    });
    let limit = node.config.kafka_max_frame_bytes;
    // What the next Produce request waits on before it appends.
    let mut produce_order = None;
    loop {
        let requests = &node.metrics.kafka_requests;
        let frame = match read_frame(&mut rd, limit).await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                info!(%peer, reason = %e, "kafka connection closed");
                requests.with_label_values(&["unknown", "closed"]).inc();
                break;
            }
        };
        let key = ApiKey::try_from(i16::from_be_bytes([frame[0], frame[1]])).ok();
        let api = key.map_or_else(|| "unknown".to_string(), |k| format!("{k:?}"));
        let task = match decode(frame) {
            Ok(Frame::Request(req)) => {
                let node = node.clone();
                let order = (req.key == ApiKey::Produce).then(|| {
                    let (order, next) = produce::Order::after(produce_order.take());
                    produce_order = Some(next);
                    order
                });
                tokio::spawn(async move { respond(&node, *req, order).await })
            }
            Ok(Frame::UnsupportedApiVersions { correlation_id }) => {
                info!(%peer, "kafka ApiVersions at an unsupported version: answered with the versions served");
                let answer = encode(correlation_id, 0, ApiKey::ApiVersions, 0, &versions::unsupported().into());
                tokio::spawn(async move { answer })
            }
            Err(e) => {
                info!(%peer, reason = %e, "kafka connection closed");
                requests.with_label_values(&[&api, "closed"]).inc();
                break;
            }
        };
        requests.with_label_values(&[&api, "ok"]).inc();
        if tx.send(task).await.is_err() {
            break;
        }
    }
    // Answers to the requests read so far still go out, in order; then the
    // write half closes, and with it the connection.
    drop(tx);
    let _ = writer.await;
}

/// The next frame's body; `None` at a clean end of the stream.
pub async fn read_frame<R: tokio::io::AsyncRead + Unpin>(rd: &mut R, limit: usize) -> Result<Option<Bytes>, Close> {
    let mut len = [0u8; 4];
    match rd.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = i32::from_be_bytes(len);
    if len < 0 {
        return Err(Close::Negative(len));
    }
    let len = len as usize;
    if len > limit {
        return Err(Close::TooLong { len, limit });
    }
    if len < MIN_FRAME {
        return Err(Close::TooShort(len));
    }
    // Grows as bytes arrive: a length is a claim, not a reservation.
    let mut body = Vec::new();
    (&mut *rd).take(len as u64).read_to_end(&mut body).await?;
    if body.len() < len {
        return Err(Close::Truncated);
    }
    Ok(Some(Bytes::from(body)))
}

/// Decodes a frame's header and body, or says why the connection closes.
pub fn decode(mut frame: Bytes) -> Result<Frame, Close> {
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let key = ApiKey::try_from(raw_key).map_err(|_| Close::UnknownKey(raw_key))?;
    if versions::advertised(key).is_none() {
        return Err(Close::Version { key, version });
    }
    if !versions::served(key, version) {
        if key == ApiKey::ApiVersions {
            return Ok(Frame::UnsupportedApiVersions { correlation_id });
        }
        return Err(Close::Version { key, version });
    }
    let undecodable = |e: anyhow::Error| Close::Undecodable { key, version, reason: format!("{e:#}") };
    let header = RequestHeader::decode(&mut frame, key.request_header_version(version)).map_err(undecodable)?;
    let body = RequestKind::decode(key, &mut frame, version).map_err(undecodable)?;
    Ok(Frame::Request(Box::new(Request { key, version, header, body })))
}

/// What goes back for one request, in its turn.
enum Answer {
    Frame(Bytes),
    /// No response at all (an acks=0 produce).
    Nothing,
    /// No response can be given: the connection closes.
    Close,
}

/// Handles a request.
async fn respond(node: &Arc<Node>, req: Request, order: Option<produce::Order>) -> Answer {
    let Request { key, version, header, body } = req;
    let resp: ResponseKind = match body {
        RequestKind::ApiVersions(_) => versions::api_versions(0).into(),
        RequestKind::Metadata(r) => {
            admin::auto_create_for_metadata(node, &r, version).await;
            metadata::handle(node, r, version).into()
        }
        RequestKind::Produce(r) => {
            let order = order.unwrap_or_else(|| produce::Order::first().0);
            match produce::handle(node, r, version, order).await {
                Some(r) => r.into(),
                None => return Answer::Nothing,
            }
        }
        RequestKind::InitProducerId(r) => init_producer::handle(node, r, version).await.into(),
        RequestKind::CreateTopics(r) => admin::create_topics(node, r, version).await.into(),
        RequestKind::DeleteTopics(r) => admin::delete_topics(node, r, version).await.into(),
        RequestKind::DescribeConfigs(r) => describe_configs::handle(node, r, version).into(),
        RequestKind::Fetch(r) => fetch::handle(node, r, version).await.into(),
        RequestKind::ListOffsets(r) => list_offsets::handle(node, r, version).await.into(),
        RequestKind::FindCoordinator(r) => find_coordinator::handle(node, r, version).await.into(),
        RequestKind::JoinGroup(r) => groups::join(node, &header, r, version).await.into(),
        RequestKind::SyncGroup(r) => groups::sync(node, r, version).await.into(),
        RequestKind::Heartbeat(r) => groups::heartbeat(node, r, version).await.into(),
        RequestKind::LeaveGroup(r) => groups::leave(node, r, version).await.into(),
        RequestKind::OffsetCommit(r) => offsets::commit(node, r, version).await.into(),
        RequestKind::OffsetFetch(r) => offsets::fetch(node, r, version).await.into(),
        other => {
            // decode() lets through only what versions::APIS lists.
            warn!(?other, "kafka request of an API not dispatched");
            return Answer::Close;
        }
    };
    encode(header.correlation_id, key.response_header_version(version), key, version, &resp)
}

/// A response frame: length, header, body.
fn encode(correlation_id: i32, header_version: i16, key: ApiKey, version: i16, resp: &ResponseKind) -> Answer {
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    let r = ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, header_version)
        .and_then(|_| resp.encode(&mut buf, version));
    if let Err(e) = r {
        // A response this node built that the codec refuses is a bug here;
        // the client gets no answer and the connection is closed.
        warn!(?key, version, error = %e, "kafka response does not encode; closing the connection");
        return Answer::Close;
    }
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Answer::Frame(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn given_bad_lengths_then_the_frame_is_refused_before_any_allocation() {
        for (len, want) in [(-1i32, "negative"), (i32::MAX, "over the limit"), (3, "shorter")] {
            let bytes = len.to_be_bytes();
            let e = read_frame(&mut &bytes[..], 1 << 20).await.unwrap_err();
            assert!(e.to_string().contains(want), "{len}: {e}");
        }
        // A length claiming more than the stream holds: closed, and the
        // buffer held only what came.
        let mut short = 1000i32.to_be_bytes().to_vec();
        short.extend_from_slice(&[0; 10]);
        assert!(matches!(read_frame(&mut &short[..], 1 << 20).await, Err(Close::Truncated)));
        assert!(read_frame(&mut &[][..], 1 << 20).await.unwrap().is_none(), "a clean end");
    }

    #[test]
    fn given_unknown_keys_versions_and_garbage_then_decode_says_close() {
        let head = |key: i16, version: i16| {
            let mut v = key.to_be_bytes().to_vec();
            v.extend_from_slice(&version.to_be_bytes());
            v.extend_from_slice(&7i32.to_be_bytes());
            v
        };
        assert!(matches!(decode(Bytes::from(head(9999, 0))), Err(Close::UnknownKey(9999))));
        assert!(matches!(decode(Bytes::from(head(3, 99))), Err(Close::Version { .. })));
        assert!(matches!(decode(Bytes::from(head(0, 2))), Err(Close::Version { .. })), "Produce v2");
        assert!(matches!(decode(Bytes::from(head(11, 8))), Err(Close::Version { .. })), "JoinGroup v8");
        assert!(matches!(decode(Bytes::from(head(18, 99))), Ok(Frame::UnsupportedApiVersions { correlation_id: 7 })));
        // Metadata v1 whose topic array claims 2^31-1 entries in 4 bytes.
        let mut m = head(3, 1);
        m.extend_from_slice(&[0xff, 0xff]); // null client id
        m.extend_from_slice(&i32::MAX.to_be_bytes());
        assert!(matches!(decode(Bytes::from(m)), Err(Close::Undecodable { .. })));
    }

    /// Valid requests of every served API, encoded at `version`.
    fn valid_frames() -> Vec<Vec<u8>> {
        use kafka_protocol::messages::*;
        use kafka_protocol::protocol::StrBytes;
        let name = TopicName(StrBytes::from_static_str("t"));
        let mut batch = BytesMut::new();
        let record = crate::kafka::records::plain_record(
            0,
            1,
            Some(Bytes::from_static(b"k")),
            Some(Bytes::from_static(b"v")),
            Default::default(),
        );
        kafka_protocol::records::RecordBatchEncoder::encode(
            &mut batch,
            [&record],
            &kafka_protocol::records::RecordEncodeOptions {
                version: 2,
                compression: kafka_protocol::records::Compression::None,
            },
        )
        .unwrap();
        let bodies: Vec<(ApiKey, RequestKind)> = vec![
            (ApiKey::ApiVersions, ApiVersionsRequest::default().into()),
            (
                ApiKey::Metadata,
                MetadataRequest::default()
                    .with_topics(Some(vec![
                        metadata_request::MetadataRequestTopic::default().with_name(Some(name.clone())),
                    ]))
                    .into(),
            ),
            (
                ApiKey::Produce,
                ProduceRequest::default()
                    .with_acks(-1)
                    .with_topic_data(vec![
                        produce_request::TopicProduceData::default().with_name(name.clone()).with_partition_data(vec![
                            produce_request::PartitionProduceData::default().with_records(Some(batch.freeze())),
                        ]),
                    ])
                    .into(),
            ),
            (
                ApiKey::Fetch,
                FetchRequest::default()
                    .with_topics(vec![
                        fetch_request::FetchTopic::default()
                            .with_topic(name.clone())
                            .with_partitions(vec![fetch_request::FetchPartition::default()]),
                    ])
                    .into(),
            ),
            (
                ApiKey::ListOffsets,
                ListOffsetsRequest::default()
                    .with_topics(vec![
                        list_offsets_request::ListOffsetsTopic::default()
                            .with_name(name)
                            .with_partitions(vec![list_offsets_request::ListOffsetsPartition::default()]),
                    ])
                    .into(),
            ),
            (ApiKey::InitProducerId, InitProducerIdRequest::default().into()),
            (
                ApiKey::CreateTopics,
                CreateTopicsRequest::default()
                    .with_topics(vec![create_topics_request::CreatableTopic::default().with_configs(vec![
                        create_topics_request::CreatableTopicConfig::default()
                            .with_value(Some(StrBytes::from_static_str("1"))),
                    ])])
                    .into(),
            ),
            (
                ApiKey::DeleteTopics,
                DeleteTopicsRequest::default().with_topic_names(vec![TopicName(StrBytes::from_static_str("t"))]).into(),
            ),
            (
                ApiKey::DescribeConfigs,
                DescribeConfigsRequest::default()
                    .with_resources(vec![describe_configs_request::DescribeConfigsResource::default()])
                    .into(),
            ),
            (ApiKey::FindCoordinator, FindCoordinatorRequest::default().into()),
            (
                ApiKey::JoinGroup,
                JoinGroupRequest::default()
                    .with_protocol_type(StrBytes::from_static_str("consumer"))
                    .with_protocols(vec![
                        join_group_request::JoinGroupRequestProtocol::default()
                            .with_name(StrBytes::from_static_str("range"))
                            .with_metadata(Bytes::from_static(b"\0\0\0\0\0\x01\0\x01t\0\0\0\0")),
                    ])
                    .into(),
            ),
            (ApiKey::SyncGroup, SyncGroupRequest::default().into()),
            (ApiKey::Heartbeat, HeartbeatRequest::default().into()),
            (ApiKey::LeaveGroup, LeaveGroupRequest::default().into()),
            (ApiKey::OffsetCommit, OffsetCommitRequest::default().into()),
            (ApiKey::OffsetFetch, OffsetFetchRequest::default().into()),
        ];
        let mut frames = Vec::new();
        for (key, body) in bodies {
            let (lo, hi) = versions::advertised(key).unwrap();
            for v in lo.max(if key == ApiKey::Produce { 3 } else { lo })..=hi {
                let mut buf = BytesMut::new();
                RequestHeader::default()
                    .with_request_api_key(key as i16)
                    .with_request_api_version(v)
                    .with_client_id(Some(StrBytes::from_static_str("c")))
                    .encode(&mut buf, key.request_header_version(v))
                    .unwrap();
                body.encode(&mut buf, v).unwrap();
                frames.push(buf.to_vec());
            }
        }
        frames
    }

    /// Seeded hostile frames — random bytes, and valid requests of every
    /// served API and version with bytes flipped, cut or inserted — never
    /// panic the decoder or the record conversion (an allocation the codec
    /// cannot make would abort the test process). Set KAFKA_FRAMES_SEED to
    /// replay a seed.
    #[test]
    fn given_seeded_hostile_frames_then_decoding_never_panics() {
        use rand::{Rng, SeedableRng};
        let seed: u64 =
            std::env::var("KAFKA_FRAMES_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
        println!("seed {seed} (KAFKA_FRAMES_SEED={seed} replays it)");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let valid = valid_frames();
        for f in &valid {
            assert!(matches!(decode(Bytes::from(f.clone())), Ok(Frame::Request(_))), "a valid frame decodes");
        }
        let (mut closed, mut decoded) = (0, 0);
        for _ in 0..10_000 {
            let frame: Vec<u8> = if rng.gen_bool(0.2) {
                let len = rng.gen_range(MIN_FRAME..200);
                (0..len).map(|_| rng.r#gen()).collect()
            } else {
                let mut f = valid[rng.gen_range(0..valid.len())].clone();
                for _ in 0..rng.gen_range(1..4) {
                    // Never the API key and version: those are checked
                    // before the codec runs, and the codec is the target.
                    let at = rng.gen_range(4..f.len());
                    match rng.gen_range(0..4) {
                        0 => f[at] = rng.r#gen(),
                        1 => f[at] = 0xff,
                        2 => f.truncate(at.max(MIN_FRAME)),
                        _ => f.insert(at, rng.r#gen()),
                    }
                }
                f
            };
            match decode(Bytes::from(frame)) {
                Ok(Frame::Request(r)) => {
                    decoded += 1;
                    if let RequestKind::Produce(p) = r.body {
                        for t in p.topic_data {
                            for d in t.partition_data {
                                let _ = super::super::records::to_replog(&d.records.unwrap_or_default(), 1 << 20);
                            }
                        }
                    }
                }
                Ok(Frame::UnsupportedApiVersions { .. }) => decoded += 1,
                Err(_) => closed += 1,
            }
        }
        println!("{closed} closed, {decoded} decoded");
        assert!(closed > 1_000, "most hostile frames close the connection");
    }
}
