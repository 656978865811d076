//! Compiles `proto/` with the pure-Rust `protox` compiler (no `protoc` needed)
//! and writes the descriptor set that the server's reflection service serves.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/iadb/v1/database.proto"];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out.join("iadb_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Malformed messages are INVALID_ARGUMENT, not INTERNAL (src/codec.rs).
        .codec_path("crate::codec::WireCodec")
        // Row batches are written by the adapters straight into their
        // encoded form, and read by the client row by row (src/batch.rs).
        .extern_path(".iadb.v1.RowBatch", "crate::RowBatch")
        .compile_fds(descriptors)?;
    Ok(())
}
