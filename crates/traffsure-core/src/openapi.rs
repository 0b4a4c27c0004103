//! JSON schemas of the API's vocabulary fields (with the `openapi` feature only): a string
//! whose values are the words of a [`Vocabulary`], so the OpenAPI document lists exactly
//! the words the code accepts. The types themselves derive `utoipa::ToSchema` behind the
//! same feature; the services that serve no API build core without it.

use traffsure_events::{
    ConversionStatus, DuplicatePolicy, FlowStatus, OutboundState, RedirectMode,
};
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};

use crate::vocab::Vocabulary;

/// A string that is one of `V`'s words.
pub fn words<V: Vocabulary>() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(V::words()))
        .build()
}

pub fn flow_status() -> Object {
    words::<FlowStatus>()
}

pub fn redirect_mode() -> Object {
    words::<RedirectMode>()
}

pub fn duplicate_policy() -> Object {
    words::<DuplicatePolicy>()
}

pub fn conversion_status() -> Object {
    words::<ConversionStatus>()
}

pub fn outbound_state() -> Object {
    words::<OutboundState>()
}
