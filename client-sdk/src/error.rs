//! SDK errors.

use replog_proto::codes::{ErrorCode, LEADER_ADDR_KEY, LEADER_ID_KEY};

/// The SDK's result: [`Error`] unless another error type is named.
///
/// ```no_run
/// use replog_client::{Client, ErrorCode, Result, TopicInfo};
///
/// /// The topic, created with 6 partitions if it does not exist yet.
/// async fn ensure_topic(client: &Client, name: &str) -> Result<TopicInfo> {
///     match client.describe_topic(name).await {
///         Err(e) if e.code() == Some(ErrorCode::UnknownTopic) => client.create_topic(name, 6, 3).await,
///         found => found,
///     }
/// }
/// # async fn run(client: Client) -> Result<()> {
/// let orders = ensure_topic(&client, "orders").await?;
/// # let _ = orders;
/// # Ok(()) }
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An SDK error. A broker's refusal carries its stable [`ErrorCode`]
/// ([`Error::code`], which also looks through `DeadlineExceeded` and
/// `Indeterminate` to the last answer); [`Error::is_retryable`] and
/// [`Error::is_indeterminate`] say what a caller may do about it.
///
/// ```
/// use replog_client::{Error, ErrorCode};
///
/// /// What to do about a failed write.
/// fn advice(e: &Error) -> &'static str {
///     match e.code() {
///         Some(ErrorCode::UnknownTopic) => "create the topic first",
///         Some(ErrorCode::RecordTooLarge | ErrorCode::BatchTooLarge) => "split the record",
///         _ if e.is_indeterminate() => "it may have been written: check before writing again",
///         _ if e.is_retryable() => "try again",
///         _ => "give up",
///     }
/// }
///
/// let refused = Error::Broker { code: ErrorCode::UnknownTopic, message: "no topic \"orders\"".into(), leader: None };
/// assert_eq!(advice(&refused), "create the topic first");
/// assert_eq!(refused.to_string(), "UNKNOWN_TOPIC(1): no topic \"orders\"");
///
/// let cut_off = Error::Transport { addr: "127.0.0.1:7001".into(), message: "connection reset".into() };
/// assert_eq!(advice(&cut_off), "it may have been written: check before writing again");
/// assert_eq!(cut_off.code(), None);
/// ```
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The broker refused the request with a stable code.
    #[error("{code}: {message}")]
    Broker { code: ErrorCode, message: String, leader: Option<LeaderHint> },
    /// The request could not reach a broker, or the connection broke. Whether
    /// a write sent this way was applied is unknown.
    #[error("transport error talking to {addr}: {message}")]
    Transport { addr: String, message: String },
    /// Retries ran out of time; `last` is the last error seen, and
    /// `indeterminate` says whether any attempt may have been applied.
    #[error("gave up after {attempts} attempts in {elapsed_ms} ms; last error: {last}")]
    DeadlineExceeded { attempts: u32, elapsed_ms: u64, indeterminate: bool, last: Box<Error> },
    /// A write failed for good on a later attempt after an earlier attempt
    /// whose outcome is unknown (timeout, broken connection, leadership
    /// change). `last` alone would read as a definite refusal, but the
    /// earlier attempt may still have been applied, so the write as a whole
    /// is indeterminate. `code()` is `last`'s code.
    #[error(
        "outcome unknown: attempt {earlier_attempt} of {attempts} may have been applied ({earlier}); \
         the last attempt failed: {last}"
    )]
    Indeterminate { attempts: u32, earlier_attempt: u32, earlier: Box<Error>, last: Box<Error> },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The producer's buffer had no room for a record (at once, or within
    /// its blocking timeout): the brokers are not keeping up with the
    /// producer, or cannot be reached. Nothing was sent.
    #[error(
        "producer buffer full: no room for a record of {record_bytes} bytes within {waited_ms} ms \
         (buffer_bytes {buffer_bytes}, buffer_records {buffer_records}); the cluster is not keeping up or not reachable"
    )]
    BufferFull { record_bytes: usize, buffer_bytes: usize, buffer_records: usize, waited_ms: u64 },
    #[error("corrupt data from broker: {0}")]
    Corrupt(String),
    /// A schema or a value the SDK's serializers refused before sending, or
    /// a record they could not decode; `code` is the one the broker would
    /// give (INVALID_RECORD, INVALID_SCHEMA, UNKNOWN_SCHEMA_ID, ...).
    #[error("{code}: {message}")]
    Schema { code: ErrorCode, message: String },
}

/// Where the broker believes the leader is, carried by a NOT_LEADER
/// refusal. The client follows these hints itself; they are visible for
/// logging and for tools that talk to nodes directly.
///
/// ```
/// use replog_client::error::LeaderHint;
/// use replog_client::{Error, ErrorCode};
///
/// fn leader_of(e: &Error) -> Option<&LeaderHint> {
///     match e {
///         Error::Broker { code: ErrorCode::NotLeader, leader, .. } => leader.as_ref(),
///         _ => None,
///     }
/// }
/// # let e = Error::Broker {
/// #     code: ErrorCode::NotLeader,
/// #     message: "node 1 does not lead orders/0".into(),
/// #     leader: Some(LeaderHint { id: 2, addr: Some("127.0.0.1:7002".into()) }),
/// # };
/// if let Some(hint) = leader_of(&e) {
///     println!("ask node {} at {:?}", hint.id, hint.addr);
/// #   assert_eq!(hint.addr.as_deref(), Some("127.0.0.1:7002"));
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderHint {
    pub id: u64,
    pub addr: Option<String>,
}

impl Error {
    /// The broker's error code, if the broker answered.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Broker { code, .. } | Error::Schema { code, .. } => Some(*code),
            Error::DeadlineExceeded { last, .. } | Error::Indeterminate { last, .. } => last.code(),
            _ => None,
        }
    }

    /// Whether the same request may succeed if retried (possibly elsewhere).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Broker { code, .. } => code.is_retryable(),
            Error::Transport { .. } => true,
            _ => false,
        }
    }

    /// Whether a write that failed this way may still have been applied.
    pub fn is_indeterminate(&self) -> bool {
        match self {
            Error::Transport { .. } => true,
            Error::Broker { code, .. } => *code == ErrorCode::Timeout || *code == ErrorCode::Unavailable,
            Error::DeadlineExceeded { indeterminate, .. } => *indeterminate,
            Error::Indeterminate { .. } => true,
            _ => false,
        }
    }

    pub(crate) fn from_status(addr: &str, status: tonic::Status) -> Error {
        let md = status.metadata();
        match replog_proto::codes::code_of(&status) {
            Some(code) => {
                let leader =
                    md.get(LEADER_ID_KEY).and_then(|v| v.to_str().ok()).and_then(|s| s.parse::<u64>().ok()).map(|id| {
                        LeaderHint {
                            id,
                            addr: md.get(LEADER_ADDR_KEY).and_then(|v| v.to_str().ok()).map(str::to_string),
                        }
                    });
                Error::Broker { code, message: status.message().to_string(), leader }
            }
            None => {
                Error::Transport { addr: addr.to_string(), message: format!("{}: {}", status.code(), status.message()) }
            }
        }
    }
}
