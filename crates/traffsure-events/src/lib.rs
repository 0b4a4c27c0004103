//! The event model shared by every service: Protobuf messages generated from `proto/`.
//!
//! Each Kafka topic carries one of these messages; this crate only defines them and
//! leaves topic names and partitioning to `traffsure-kafka`.

pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/traffsure.events.v1.rs"));
}

pub use v1::*;
