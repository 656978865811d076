//! The server's request decoding as an attacker meets it: arbitrary bytes,
//! and valid requests with bytes flipped or cut, sent as the body of every
//! RPC of `iadb.v1.Database` to a live server. Each gets a status (a body
//! that is not the RPC's message: INVALID_ARGUMENT; a request that decodes:
//! an answer or a status that is not a crash), the process stays up, and
//! afterwards a FetchOne works. Fixed seed; the count of inputs is printed.

use iadb::{DatabaseInterface, Value, proto};
use iadb_tests::TestServer;
use proptest::{
    prelude::*,
    test_runner::{Config, RngAlgorithm, TestRng, TestRunner},
};
use prost::{
    Message,
    bytes::{Buf, BufMut},
};
use std::{
    io::Write,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};
use tonic::{
    Code, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::http::uri::PathAndQuery,
    transport::Channel,
};

/// A codec that sends its bytes as they are and reads answers as bytes.
#[derive(Clone, Copy, Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n).to_vec()))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// The RPCs, their paths, and whether bytes decode as their request.
#[derive(Debug, Clone, Copy)]
enum Rpc {
    Execute,
    ExecuteMany,
    FetchAll,
    FetchOne,
    TableExists,
    Migrate,
    Health,
}

const RPCS: [Rpc; 7] = [
    Rpc::Execute,
    Rpc::ExecuteMany,
    Rpc::FetchAll,
    Rpc::FetchOne,
    Rpc::TableExists,
    Rpc::Migrate,
    Rpc::Health,
];

impl Rpc {
    fn path(self) -> PathAndQuery {
        PathAndQuery::from_static(match self {
            Rpc::Execute => "/iadb.v1.Database/Execute",
            Rpc::ExecuteMany => "/iadb.v1.Database/ExecuteMany",
            Rpc::FetchAll => "/iadb.v1.Database/FetchAll",
            Rpc::FetchOne => "/iadb.v1.Database/FetchOne",
            Rpc::TableExists => "/iadb.v1.Database/TableExists",
            Rpc::Migrate => "/iadb.v1.Database/Migrate",
            Rpc::Health => "/iadb.v1.Database/Health",
        })
    }

    fn decodes(self, bytes: &[u8]) -> bool {
        match self {
            Rpc::Execute => proto::ExecuteRequest::decode(bytes).is_ok(),
            Rpc::ExecuteMany => proto::ExecuteManyRequest::decode(bytes).is_ok(),
            Rpc::FetchAll => proto::FetchAllRequest::decode(bytes).is_ok(),
            Rpc::FetchOne => proto::FetchOneRequest::decode(bytes).is_ok(),
            Rpc::TableExists => proto::TableExistsRequest::decode(bytes).is_ok(),
            Rpc::Migrate => proto::MigrateRequest::decode(bytes).is_ok(),
            Rpc::Health => proto::HealthRequest::decode(bytes).is_ok(),
        }
    }
}

fn any_value() -> impl Strategy<Value = proto::Value> {
    use proto::value::Kind;
    proptest::option::of(prop_oneof![
        any::<i32>().prop_map(Kind::Null),
        any::<bool>().prop_map(Kind::Bool),
        any::<i64>().prop_map(Kind::Int),
        any::<f64>().prop_map(Kind::Double),
        "\\PC{0,12}".prop_map(Kind::Text),
        proptest::collection::vec(any::<u8>(), 0..12).prop_map(Kind::Bytes),
        "[0-9.eE+-]{0,10}".prop_map(Kind::Decimal),
        "[0-9:-]{0,12}".prop_map(Kind::Date),
        "[0-9:.]{0,12}".prop_map(Kind::Time),
        "[0-9:T .-]{0,20}".prop_map(Kind::Datetime),
        "[0-9:TZ .+-]{0,24}".prop_map(Kind::TimestampTz),
        "[\\[\\]{}\":,0-9a-z]{0,12}".prop_map(Kind::Json),
    ])
    .prop_map(|kind| proto::Value { kind })
}

/// A valid request of `rpc`'s type, encoded: harmless statements (reads,
/// or writes to a scratch table), any parameters, any database name.
fn valid_request(rpc: Rpc) -> BoxedStrategy<Vec<u8>> {
    let database = prop_oneof![Just(String::new()), Just("default".to_owned()), "\\PC{0,8}"];
    let sql = prop_oneof![
        Just("SELECT ?".to_owned()),
        Just("SELECT 1".to_owned()),
        Just("INSERT INTO scratch (v) VALUES (?)".to_owned()),
        Just(String::new()),
        "\\PC{0,24}",
    ];
    let params = proptest::collection::vec(any_value(), 0..3);
    let options = proptest::option::of((any::<u32>(), any::<bool>()).prop_map(|(t, read_only)| {
        proto::QueryOptions {
            timeout_ms: t % 10_000,
            read_only,
            ..Default::default()
        }
    }));
    match rpc {
        Rpc::Execute => (database, sql, params, options)
            .prop_map(|(database, sql, params, options)| {
                proto::ExecuteRequest {
                    database,
                    sql,
                    params,
                    options,
                }
                .encode_to_vec()
            })
            .boxed(),
        Rpc::FetchAll => (database, sql, params, options)
            .prop_map(|(database, sql, params, options)| {
                proto::FetchAllRequest {
                    database,
                    sql,
                    params,
                    options,
                }
                .encode_to_vec()
            })
            .boxed(),
        Rpc::FetchOne => (database, sql, params, options)
            .prop_map(|(database, sql, params, options)| {
                proto::FetchOneRequest {
                    database,
                    sql,
                    params,
                    options,
                }
                .encode_to_vec()
            })
            .boxed(),
        Rpc::ExecuteMany => (
            database,
            sql,
            proptest::collection::vec(
                proptest::collection::vec(any_value(), 0..3)
                    .prop_map(|values| proto::Row { values }),
                0..3,
            ),
            options,
        )
            .prop_map(|(database, sql, param_sets, options)| {
                proto::ExecuteManyRequest {
                    database,
                    sql,
                    param_sets,
                    options,
                }
                .encode_to_vec()
            })
            .boxed(),
        Rpc::TableExists => (database, "\\PC{0,12}")
            .prop_map(|(database, table)| {
                proto::TableExistsRequest { database, table }.encode_to_vec()
            })
            .boxed(),
        // Read-only actions: a fuzzer must not apply migrations.
        Rpc::Migrate => (
            database,
            prop_oneof![Just(1), Just(2), Just(5), any::<i32>()],
        )
            .prop_map(|(database, action)| {
                let action = if matches!(action, 3 | 4 | 6 | 7) {
                    0
                } else {
                    action
                };
                proto::MigrateRequest {
                    database,
                    action,
                    target_version: String::new(),
                    files: vec![],
                    allow_missing: false,
                    allow_out_of_order: false,
                }
                .encode_to_vec()
            })
            .boxed(),
        Rpc::Health => database
            .prop_map(|database| proto::HealthRequest { database }.encode_to_vec())
            .boxed(),
    }
}

/// What is sent: arbitrary bytes, or a valid request with a byte changed
/// or its tail cut off, or a valid request as it is.
fn any_input() -> impl Strategy<Value = (Rpc, Vec<u8>)> {
    (0..RPCS.len(), 0u8..4).prop_flat_map(|(i, mode)| {
        let rpc = RPCS[i];
        let body = match mode {
            0 => proptest::collection::vec(any::<u8>(), 0..256).boxed(),
            1 => (valid_request(rpc), any::<usize>(), any::<u8>())
                .prop_map(|(mut bytes, at, byte)| {
                    if !bytes.is_empty() {
                        let at = at % bytes.len();
                        bytes[at] = byte;
                    }
                    bytes
                })
                .boxed(),
            2 => (valid_request(rpc), any::<usize>())
                .prop_map(|(mut bytes, keep)| {
                    let keep = keep % (bytes.len() + 1);
                    bytes.truncate(keep);
                    bytes
                })
                .boxed(),
            _ => valid_request(rpc),
        };
        // Migrate only ever gets bodies that cannot apply anything.
        let body = if matches!(rpc, Rpc::Migrate) && mode != 3 {
            body.prop_filter("no migrate apply from fuzzing", |b| {
                proto::MigrateRequest::decode(b.as_slice())
                    .map(|m| !matches!(m.action, 3 | 4 | 6 | 7))
                    .unwrap_or(true)
            })
            .boxed()
        } else {
            body
        };
        body.prop_map(move |b| (rpc, b))
    })
}

/// Sends `body` to `rpc` and reads the whole answer: Ok or the status code
/// and message.
async fn send(channel: &Channel, rpc: Rpc, body: Vec<u8>) -> Result<(), (Code, String)> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| (Code::Unknown, format!("channel not ready: {e}")))?;
    let mut request = tonic::Request::new(body);
    request.set_timeout(Duration::from_secs(10));
    let status = |s: Status| (s.code(), s.message().to_owned());
    if matches!(rpc, Rpc::FetchAll) {
        let mut stream = grpc
            .server_streaming(request, rpc.path(), RawCodec)
            .await
            .map_err(status)?
            .into_inner();
        // A statement of the fuzzer returns a handful of rows at most.
        for _ in 0..10_000 {
            if stream.message().await.map_err(status)?.is_none() {
                return Ok(());
            }
        }
        Err((
            Code::Unknown,
            "a fuzzed statement streamed 10,000 frames".into(),
        ))
    } else {
        grpc.unary(request, rpc.path(), RawCodec)
            .await
            .map(|_| ())
            .map_err(status)
    }
}

#[test]
fn arbitrary_request_bodies_get_a_status_and_the_server_keeps_serving() {
    const CASES: u32 = 1024;
    let server = TestServer::start(&["--database-url", "sqlite:///./fuzz.db"]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (channel, db) = rt.block_on(async {
        let db = server.client("").await;
        db.execute("CREATE TABLE scratch (v)", &[])
            .await
            .expect("scratch table");
        (server.channel().await, db)
    });
    let config = Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let tried = AtomicU64::new(0);
    let undecodable = AtomicU64::new(0);
    let result = runner.run(&any_input(), |(rpc, body)| {
        tried.fetch_add(1, Ordering::Relaxed);
        let decodes = rpc.decodes(&body);
        let answer = rt.block_on(send(&channel, rpc, body));
        prop_assert!(
            server.proc_status_kib("VmRSS").is_some(),
            "the server process is gone\n{}",
            server.log_text()
        );
        if !decodes {
            undecodable.fetch_add(1, Ordering::Relaxed);
            let code = answer.as_ref().err().map(|(c, _)| *c);
            prop_assert_eq!(
                code,
                Some(Code::InvalidArgument),
                "{:?}: a body that is not the request message: {:?}",
                rpc,
                answer
            );
        } else if let Err((code, message)) = &answer {
            prop_assert!(
                !matches!(
                    code,
                    Code::Unknown | Code::Internal | Code::Cancelled | Code::DataLoss
                ),
                "{:?}: {:?} {}",
                rpc,
                code,
                message
            );
            prop_assert!(message.len() < 2_000, "{} bytes of message", message.len());
        }
        Ok(())
    });
    let _ = writeln!(
        std::io::stderr(),
        "property request decoding: {} inputs tried ({} not decodable as their request)",
        tried.load(Ordering::Relaxed),
        undecodable.load(Ordering::Relaxed)
    );
    // The server serves after all of it.
    rt.block_on(async {
        let row = db
            .fetch_one("SELECT 41 + 1 AS n", &[])
            .await
            .expect("FetchOne after the fuzzing")
            .expect("a row");
        assert_eq!(row.get("n"), Some(&Value::Int(42)));
    });
    if let Err(e) = result {
        panic!("request decoding property failed: {e}");
    }
}
