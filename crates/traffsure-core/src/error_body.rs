//! The one shape of an error answer across every HTTP service: reporting-api, the
//! dispatcher's replay and postback-ingest all answer a refused request with
//! `{"status": 422, "code": "invalid_field", "field": "date_from", "message": "..."}`.
//!
//! Each service keeps its own error enum and maps it here in one place; this module only
//! fixes the shape, so a client parses every service's errors the same way.

use serde::{Deserialize, Serialize};

/// An error answer's body.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The HTTP status code, repeated for clients that only keep the body.
    pub status: u16,
    /// A stable machine-readable word (`invalid_field`, `not_found`, `unauthorized`, ...).
    pub code: String,
    /// The parameter or field at fault, when one is.
    pub field: Option<String>,
    /// What is wrong, for a person.
    pub message: String,
}

impl ErrorBody {
    pub fn new(status: u16, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            field: None,
            message: message.into(),
        }
    }

    /// The same error, naming the field at fault.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_every_key_even_without_a_field() {
        let body = ErrorBody::new(404, "not_found", "no such flow");
        assert_eq!(
            serde_json::to_value(&body).unwrap_or_default(),
            serde_json::json!({"status": 404, "code": "not_found", "field": null, "message": "no such flow"})
        );
        let body = ErrorBody::new(422, "invalid_field", "must be a date").with_field("date_from");
        assert_eq!(body.field.as_deref(), Some("date_from"));
    }
}
