//! iadb's end-to-end test support: a real `iadb-server` process on a loopback
//! port, the engines under test, and the conformance suite, written once and
//! run on every engine both directly on the adapter and through the gRPC
//! client.

pub mod certs;
pub mod conformance;
pub mod d1_fake;
pub mod deadline;
pub mod dialect;
pub mod engine_proxy;
pub mod fake_server;
pub mod harness;
pub mod pg_cluster;
pub mod process;

pub use harness::{Engine, Target, TestServer};
