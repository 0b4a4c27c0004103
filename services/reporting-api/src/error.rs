//! API errors and the one place that maps them to HTTP answers, every one with the
//! body `traffsure_core::ErrorBody` (`{status, code, field, message}`): refused input,
//! missing credentials and CSRF failures as much as an unavailable ClickHouse.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use traffsure_core::ErrorBody;

/// What no route answers, with the error body: a path with no route (404), or a method
/// the path's routes do not take (405). Shared with the other services.
pub use traffsure_telemetry::unknown_route;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    Invalid { field: String, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A body over the route's size limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    Unavailable(String),
    /// No credentials, or wrong ones.
    #[error("{0}")]
    Unauthorized(String),
    /// A write with a session but without its CSRF token, or a login from another origin.
    #[error("{0}")]
    Csrf(String),
    /// Logged in, but the user's role or flows do not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// Too many failed logins: try again after `retry_after` seconds.
    #[error("{message}")]
    TooManyRequests { message: String, retry_after: u64 },
    #[error("{0}")]
    Internal(String),
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<traffsure_core::flow::FlowError> for ApiError {
    fn from(e: traffsure_core::flow::FlowError) -> Self {
        Self::Invalid {
            field: e.field,
            message: e.message,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Csrf(_) => StatusCode::FORBIDDEN,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::ClickHouse(_) | Self::Kafka(_) | Self::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let (code, field) = match self {
            Self::Invalid { field, .. } => ("invalid_field", Some(field.as_str())),
            Self::NotFound(_) => ("not_found", None),
            Self::Conflict(_) => ("conflict", None),
            Self::PayloadTooLarge(_) => ("payload_too_large", None),
            Self::Unavailable(_) => ("unavailable", None),
            Self::Unauthorized(_) => ("unauthorized", None),
            Self::Csrf(_) => ("csrf", None),
            Self::Forbidden(_) => ("forbidden", None),
            Self::TooManyRequests { .. } => ("too_many_requests", None),
            Self::Internal(_) => ("internal", None),
            Self::ClickHouse(_) => ("clickhouse_unavailable", None),
            Self::Kafka(_) => ("kafka_unavailable", None),
        };
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let mut body = ErrorBody::new(status.as_u16(), code, self.to_string());
        if let Some(field) = field {
            body = body.with_field(field);
        }
        let mut response = HttpResponse::build(status);
        if let Self::Unauthorized(_) = self {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        if let Self::TooManyRequests { retry_after, .. } = self {
            response.insert_header((header::RETRY_AFTER, retry_after.to_string()));
        }
        response.json(body)
    }
}

/// A JSON body that cannot be read: 413 over the route's size limit, 422 otherwise.
pub fn json_error(
    error: actix_web::error::JsonPayloadError,
    _: &actix_web::HttpRequest,
) -> actix_web::Error {
    use actix_web::error::{JsonPayloadError as E, PayloadError};
    match error {
        E::OverflowKnownLength { length, limit } => ApiError::PayloadTooLarge(format!(
            "the body ({length} bytes) is larger than allowed (limit: {limit} bytes)"
        )),
        E::Overflow { limit } => ApiError::PayloadTooLarge(format!(
            "the body is larger than allowed (limit: {limit} bytes)"
        )),
        E::Payload(PayloadError::Overflow) => {
            ApiError::PayloadTooLarge("the body is larger than allowed".into())
        }
        E::ContentType => ApiError::invalid(
            "body",
            "the body must be JSON, sent with Content-Type: application/json",
        ),
        error => ApiError::invalid("body", error.to_string()),
    }
    .into()
}

pub fn path_error(
    error: actix_web::error::PathError,
    _: &actix_web::HttpRequest,
) -> actix_web::Error {
    ApiError::NotFound(format!("no such resource: {error}")).into()
}

/// The middleware that gives every error answer under `/api/` the error body, where
/// actix-web answers one itself without it (a body over a route's size limit, 413).
pub async fn api_error_bodies(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<
    actix_web::dev::ServiceResponse<actix_web::body::EitherBody<impl actix_web::body::MessageBody>>,
    actix_web::Error,
> {
    let api = req.path().starts_with("/api/");
    let response = next.call(req).await?;
    let status = response.status();
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !api || json || !(status.is_client_error() || status.is_server_error()) {
        return Ok(response.map_into_left_body());
    }
    let code = match status {
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::NOT_FOUND => "not_found",
        _ if status.is_server_error() => "internal",
        _ => "refused",
    };
    let message = status
        .canonical_reason()
        .unwrap_or("refused")
        .to_ascii_lowercase();
    let body = ErrorBody::new(status.as_u16(), code, message);
    let (request, _) = response.into_parts();
    let answer = HttpResponse::build(status).json(body);
    Ok(actix_web::dev::ServiceResponse::new(request, answer).map_into_right_body())
}

pub fn query_error(
    error: actix_web::error::QueryPayloadError,
    _: &actix_web::HttpRequest,
) -> actix_web::Error {
    ApiError::invalid("query", error.to_string()).into()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use actix_web::body::MessageBody;

    use super::*;

    fn answer(error: ApiError) -> (StatusCode, Option<String>, ErrorBody) {
        let response = error.error_response();
        let status = response.status();
        let challenge = response
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_string());
        let bytes = response.into_body().try_into_bytes().unwrap();
        (status, challenge, serde_json::from_slice(&bytes).unwrap())
    }

    #[test]
    fn every_error_answers_with_the_one_body() {
        let (status, _, body) = answer(ApiError::invalid("country", "two letters"));
        assert_eq!(status, 422);
        assert_eq!(
            body,
            ErrorBody::new(422, "invalid_field", "two letters").with_field("country")
        );
        let (status, challenge, body) = answer(ApiError::Unauthorized("log in".into()));
        assert_eq!(status, 401);
        assert_eq!(challenge.as_deref(), Some("Bearer"));
        assert_eq!(body, ErrorBody::new(401, "unauthorized", "log in"));
        let (status, challenge, body) = answer(ApiError::Csrf("no token".into()));
        assert_eq!((status, challenge), (StatusCode::FORBIDDEN, None));
        assert_eq!(body, ErrorBody::new(403, "csrf", "no token"));
        let (status, _, body) = answer(ApiError::NotFound("no such flow".into()));
        assert_eq!((status.as_u16(), body.field), (404, None));
    }

    /// A JSON body over the limit is a 413 (docs/api.md), whether its length is declared
    /// or found while reading it; a malformed one stays a 422 naming the body.
    #[actix_web::test]
    async fn a_json_body_over_the_limit_is_too_large() {
        use actix_web::{test, web, App};
        let app = test::init_service(
            App::new()
                .app_data(
                    web::JsonConfig::default()
                        .limit(64)
                        .error_handler(json_error),
                )
                .route(
                    "/",
                    web::post().to(|_: web::Json<serde_json::Value>| async { "ok" }),
                ),
        )
        .await;
        let big = serde_json::json!({"name": "x".repeat(100)}).to_string();
        let declared = test::TestRequest::post()
            .uri("/")
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .set_payload(big.clone());
        let streamed = test::TestRequest::post()
            .uri("/")
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .set_payload(big)
            // No length: the limit is found while reading.
            .insert_header((header::CONTENT_LENGTH, "0"));
        for request in [declared, streamed] {
            let response = test::call_service(&app, request.to_request()).await;
            assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
            let body: ErrorBody = test::read_body_json(response).await;
            assert_eq!(
                (body.status, body.code.as_str(), body.field),
                (413, "payload_too_large", None)
            );
            assert!(body.message.contains("limit: 64 bytes"), "{}", body.message);
        }
        let malformed = test::TestRequest::post()
            .uri("/")
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .set_payload("{");
        let response = test::call_service(&app, malformed.to_request()).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body: ErrorBody = test::read_body_json(response).await;
        assert_eq!(body.field.as_deref(), Some("body"));
        // A form (the login page's, say) instead of JSON: says what is wanted.
        let form = test::TestRequest::post()
            .uri("/")
            .insert_header((header::CONTENT_TYPE, "application/x-www-form-urlencoded"))
            .set_payload("username=a&password=b");
        let response = test::call_service(&app, form.to_request()).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body: ErrorBody = test::read_body_json(response).await;
        assert!(
            body.message.contains("Content-Type: application/json"),
            "{}",
            body.message
        );
    }
}
