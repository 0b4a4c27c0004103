//! Compiles `proto/` into Rust with protox, so building needs no system `protoc`.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "traffsure/events/v1/flows.proto",
        "traffsure/events/v1/clicks.proto",
        "traffsure/events/v1/postbacks.proto",
        "traffsure/events/v1/conversions.proto",
        "traffsure/events/v1/outbound.proto",
        "traffsure/events/v1/objects.proto",
        "traffsure/events/v1/impressions.proto",
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    let descriptors = protox::compile(files, [&root])?;
    prost_build::Config::new()
        .btree_map(["."])
        // A flow's large optional parts on the heap, allocated only when set: every
        // service keeps every flow in memory, and these inline made a flow 1 KB.
        .boxed(".traffsure.events.v1.Flow.traffic_source_postback")
        .boxed(".traffsure.events.v1.Flow.postback_security")
        .boxed(".traffsure.events.v1.Flow.cost_model")
        .boxed(".traffsure.events.v1.Flow.own_cost_model")
        .compile_fds(descriptors)?;
    Ok(())
}
