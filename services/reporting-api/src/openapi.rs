//! The OpenAPI document of the JSON API, generated from the code: each handler's
//! `#[utoipa::path]` attribute (method, path, parameters, answers), the types the handlers
//! read and write (`ToSchema`, `IntoParams`; core's behind its `openapi` feature), and
//! `bodies` for the answers built with `json!`. The four kinds of stored objects share
//! generic handlers, so their operations are built here from each spec's schema.
//!
//! Served at `/api/v1/openapi.json` and drawn by the reference page at `/api/docs`; the
//! end-to-end tests validate every answer they read against it, so it cannot drift.

use std::sync::OnceLock;

use actix_web::HttpResponse;
use traffsure_core::objects::{
    self, AffiliateNetworkSpec, LanderSpec, ObjectSpec, OfferSpec, TrafficSourceSpec,
};
use traffsure_core::ErrorBody;
use traffsure_events::ObjectKind;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Required, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

pub mod bodies;

/// The statuses every operation may answer besides its own, with the error body: the
/// credentials (401) and the stores behind the API (503). Writes add the CSRF check (403).
const COMMON_ERRORS: &[(&str, &str)] = &[
    ("401", "No valid API key or session"),
    ("503", "ClickHouse or Kafka unavailable"),
];

/// The answer to a body over the route's size limit (the JSON limit, or a route's own).
const BODY_TOO_LARGE: &str = "A body over the route's size limit (payload_too_large)";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "TraffSure reporting API",
        version = "1",
        description = "Dashboard, clicks, conversions, postback log, outbound postbacks, \
reports, exchange rates, flows and the objects they use (traffic sources, affiliate networks, \
offers, landers). Authenticate with an API key (`Authorization: Bearer <key>` or \
`X-Api-Key`) or an admin session cookie (state-changing requests with the cookie also need \
`X-CSRF-Token`). Every error answers with one body, `ErrorBody` \
(`{status, code, field, message}`); an invalid or unknown query parameter is a 422 naming it \
in `field`. Lists are newest first and page with `next_cursor`."
    ),
    paths(
        crate::auth::login,
        crate::auth::logout,
        crate::auth::session,
        crate::api::openapi,
        crate::api::dashboard::dashboard,
        crate::api::clicks::list,
        crate::api::conversions::list,
        crate::api::postbacks::list,
        crate::api::postbacks::get,
        crate::api::outbound::list,
        crate::api::outbound::replay,
        crate::api::outbound::presets,
        crate::api::outbound::send_test,
        crate::api::reports::report,
        crate::api::exchange_rates::list,
        crate::api::exchange_rates::put,
        crate::api::exchange_rates::import,
        crate::api::flows::list,
        crate::api::flows::create,
        crate::api::flows::get,
        crate::api::flows::update,
        crate::api::objects::source_templates,
        crate::api::objects::network_templates,
        crate::api::objects::source_from_template,
        crate::api::objects::network_from_template,
        crate::api::suggestions::list,
        crate::api::users::me,
        crate::api::users::update_me,
        crate::api::users::list,
        crate::api::users::create,
        crate::api::users::get,
        crate::api::users::update,
        crate::api::users::delete,
        crate::api::users::keys,
        crate::api::users::create_key,
        crate::api::users::revoke_key,
        crate::api::audit::list,
        crate::api::costs::list,
        crate::api::costs::create,
        crate::api::costs::import,
        crate::api::scoped_postbacks::get_global,
        crate::api::scoped_postbacks::put_global,
    ),
    components(schemas(
        ErrorBody,
        TrafficSourceSpec,
        AffiliateNetworkSpec,
        OfferSpec,
        LanderSpec,
    )),
    tags(
        (name = "reports", description = "The dashboard and reports"),
        (name = "logs", description = "Clicks, conversions, the postback log and outbound postbacks, a page at a time"),
        (name = "flows", description = "Flows and their outbound postbacks"),
        (name = "objects", description = "Traffic sources, affiliate networks, offers and landers, and the templates catalogue"),
        (name = "exchange rates", description = "The rates that convert revenue into the reporting currency"),
        (name = "auth", description = "Admin login and this document"),
        (name = "users", description = "Users, their API keys, who is asking, and the audit log"),
        (name = "costs", description = "Cost updates: the real spend of a flow over whole hours"),
    ),
    modifiers(&ObjectOperations, &CommonAnswers, &OperationIds, &Security),
    security(("apiKey" = []), ("apiKeyHeader" = []), ("session" = [])),
)]
pub struct ApiDoc;

/// The document as JSON, built once.
pub fn json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"openapi: {e}\"}}"))
    })
}

/// `GET /api/docs`: the interactive reference, Swagger UI compiled into the binary.
pub async fn reference_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(include_str!("../static/api-docs.html"))
}

pub async fn reference_script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .body(include_str!("../static/api-docs.js"))
}

pub async fn swagger_ui_js() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header(("cache-control", "public, max-age=86400"))
        .body(include_str!(
            "../static/vendor/swagger-ui/swagger-ui-bundle.js"
        ))
}

pub async fn swagger_ui_css() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header(("cache-control", "public, max-age=86400"))
        .body(include_str!("../static/vendor/swagger-ui/swagger-ui.css"))
}

fn error_response(description: &str) -> utoipa::openapi::Response {
    json_response(description, Ref::from_schema_name(ErrorBody::name()))
}

fn json_response(description: &str, schema: impl Into<RefOr<Schema>>) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new().schema(Some(schema)).build(),
        )
        .build()
}

/// Adds the answers every operation shares (`COMMON_ERRORS`, 403 on writes, 413 where
/// there is a request body) where the operation does not state them; public operations
/// (`security(())`) get no 401.
struct CommonAnswers;

impl Modify for CommonAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                (&mut item.get, false),
                (&mut item.post, true),
                (&mut item.put, true),
                (&mut item.delete, true),
                (&mut item.patch, true),
            ];
            for (operation, write) in operations {
                let Some(operation) = operation.as_mut() else {
                    continue;
                };
                // `security(())`: an empty requirement, no credentials needed.
                let public = operation.security.as_ref().is_some_and(|requirements| {
                    requirements
                        .iter()
                        .any(|r| serde_json::to_value(r).is_ok_and(|v| v == serde_json::json!({})))
                });
                let responses = &mut operation.responses.responses;
                for (status, description) in COMMON_ERRORS {
                    if public && *status == "401" {
                        continue;
                    }
                    responses
                        .entry(status.to_string())
                        .or_insert_with(|| error_response(description).into());
                }
                if operation.request_body.is_some() {
                    responses
                        .entry("413".into())
                        .or_insert_with(|| error_response(BODY_TOO_LARGE).into());
                }
                if write && !public {
                    responses.entry("403".into()).or_insert_with(|| {
                        error_response(
                            "A write with the session cookie but without its X-CSRF-Token, or one the \
                             user's role or flows do not allow (forbidden)",
                        )
                        .into()
                    });
                }
            }
        }
    }
}

/// Names every operation by its method and path (`get_flows_id`): unique, as OpenAPI
/// requires, where the handlers' own names repeat (`list` in every module).
struct OperationIds;

impl Modify for OperationIds {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let name: Vec<String> = path
                .trim_start_matches("/api/v1/")
                .split('/')
                .map(|s| {
                    s.trim_matches(|c| c == '{' || c == '}')
                        .replace(['-', '.'], "_")
                })
                .collect();
            let name = name.join("_");
            for (method, operation) in [
                ("get", &mut item.get),
                ("post", &mut item.post),
                ("put", &mut item.put),
                ("delete", &mut item.delete),
                ("patch", &mut item.patch),
            ] {
                if let Some(operation) = operation.as_mut() {
                    operation.operation_id = Some(format!("{method}_{name}"));
                }
            }
        }
    }
}

/// The ways to authenticate.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "apiKey",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key from the api_keys setting"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "apiKeyHeader",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Api-Key"))),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "ts_session",
                "Admin session from POST /api/v1/auth/login; writes also need the X-CSRF-Token header",
            ))),
        );
    }
}

/// The operations of the four kinds of stored objects, whose handlers are generic over
/// the kind's spec: list, create, read, update, archive and unarchive.
struct ObjectOperations;

impl Modify for ObjectOperations {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        object_operations::<TrafficSourceSpec>(openapi, "/api/v1/traffic-sources");
        object_operations::<AffiliateNetworkSpec>(openapi, "/api/v1/affiliate-networks");
        object_operations::<OfferSpec>(openapi, "/api/v1/offers");
        object_operations::<LanderSpec>(openapi, "/api/v1/landers");
    }
}

/// The name of a kind's view schema (`OfferView`).
fn view_name<S: ToSchema>() -> String {
    format!("{}View", <S as ToSchema>::name().trim_end_matches("Spec"))
}

/// A stored object as the API shows it: the spec's fields (`ObjectView` flattens it),
/// what the store adds, and an affiliate network's postback URL.
fn view_schema<S: ObjectSpec + ToSchema>() -> RefOr<Schema> {
    let mut view = match S::schema() {
        RefOr::T(Schema::Object(object)) => object,
        other => return other,
    };
    let integer = |description: &str| {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0))
            .description(Some(description))
            .build()
    };
    let mut add = |name: &str, schema: Schema| {
        view.properties.insert(name.into(), schema.into());
        view.required.push(name.into());
    };
    add("id", integer("The object's id").into());
    add(
        "archived",
        ObjectBuilder::new()
            .schema_type(Type::Boolean)
            .description(Some("Hidden from lists and not selectable; flows keep it"))
            .build()
            .into(),
    );
    add(
        "created_at_ms",
        integer("Milliseconds since the Unix epoch").into(),
    );
    add(
        "updated_at_ms",
        integer("Milliseconds since the Unix epoch").into(),
    );
    add("revision", integer("Counts the object's changes").into());
    if S::KIND == ObjectKind::AffiliateNetwork {
        add(
            "postback_url",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some("The postback URL to paste into the network"))
                .build()
                .into(),
        );
    }
    view.description = Some(format!("A stored {}", objects::kind_name(S::KIND)));
    RefOr::T(Schema::Object(view))
}

fn object_operations<S: ObjectSpec + ToSchema>(openapi: &mut utoipa::openapi::OpenApi, list: &str) {
    let kind = objects::kind_name(S::KIND);
    let key = format!("{}s", objects::kind_key(S::KIND));
    let tag = "objects";
    let view = view_name::<S>();
    openapi
        .components
        .get_or_insert_with(Default::default)
        .schemas
        .insert(view.clone(), view_schema::<S>());
    let view_ref = || Ref::from_schema_name(view.clone());
    let spec_body = || {
        RequestBodyBuilder::new()
            .required(Some(Required::True))
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name(<S as ToSchema>::name())))
                    .build(),
            )
            .build()
    };
    let id = || {
        ParameterBuilder::new()
            .name("id")
            .parameter_in(ParameterIn::Path)
            .required(Required::True)
            .description(Some(format!("The {kind}'s id")))
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0)),
            ))
            .build()
    };
    let not_found = || error_response(&format!("No such {kind}"));
    let invalid = || error_response("A field is not acceptable, named in field");

    let listed = ObjectBuilder::new()
        .property(
            key.clone(),
            utoipa::openapi::schema::ArrayBuilder::new().items(view_ref()),
        )
        .required(key.clone())
        .build();
    let archived = ParameterBuilder::new()
        .name("archived")
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some("1 or true: list archived ones too"))
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .build();
    let paths = &mut openapi.paths;
    // `POST …/from-template` (traffic sources and networks) answers the created object.
    if let Some(created) = paths
        .paths
        .get_mut(&format!("{list}/from-template"))
        .and_then(|item| item.post.as_mut())
    {
        created.responses.responses.insert(
            "201".into(),
            json_response(&format!("The {kind} created"), view_ref()).into(),
        );
    }
    paths.add_path_operation(
        list,
        vec![HttpMethod::Get],
        OperationBuilder::new()
            .tag(tag)
            .summary(Some(format!("Every {kind} (archived ones on request)")))
            .parameter(archived)
            .response("200", json_response("The list", listed))
            .response("422", error_response("Invalid parameter, named in field")),
    );
    paths.add_path_operation(
        list,
        vec![HttpMethod::Post],
        OperationBuilder::new()
            .tag(tag)
            .summary(Some(format!("Create a {kind}")))
            .request_body(Some(spec_body()))
            .response("201", json_response("Created", view_ref()))
            .response("404", not_found())
            .response("422", invalid()),
    );
    let one = format!("{list}/{{id}}");
    paths.add_path_operation(
        &one,
        vec![HttpMethod::Get],
        OperationBuilder::new()
            .tag(tag)
            .summary(Some(format!("One {kind}")))
            .parameter(id())
            .response("200", json_response(kind, view_ref()))
            .response("404", not_found()),
    );
    paths.add_path_operation(
        &one,
        vec![HttpMethod::Put],
        OperationBuilder::new()
            .tag(tag)
            .summary(Some(format!(
                "Change a {kind}; flows that use it are published again"
            )))
            .parameter(id())
            .request_body(Some(spec_body()))
            .response("200", json_response("Changed", view_ref()))
            .response("404", not_found())
            .response("422", invalid()),
    );
    for (verb, summary) in [
        (
            "archive",
            "Archive: hidden from lists and not selectable; flows keep it",
        ),
        ("unarchive", "Take out of the archive"),
    ] {
        paths.add_path_operation(
            format!("{one}/{verb}"),
            vec![HttpMethod::Post],
            OperationBuilder::new()
                .tag(tag)
                .summary(Some(summary))
                .parameter(id())
                .response("200", json_response("Done", view_ref()))
                .response("404", not_found()),
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::Value;

    fn doc() -> Value {
        serde_json::from_str(super::json()).unwrap()
    }

    /// Every `/api/v1` route registered in `routes.rs` is in the document, with its
    /// method where the route names it next to the path.
    #[test]
    fn documents_every_registered_route() {
        let doc = doc();
        let paths = doc["paths"].as_object().unwrap();
        let source = include_str!("routes.rs");
        let mut checked = 0;
        for (at, _) in source.match_indices("\"/api/v1") {
            let rest = &source[at + 1..];
            let path = &rest[..rest.find('"').unwrap()];
            if path.contains("{route}") {
                continue;
            }
            let item = paths
                .get(path)
                .unwrap_or_else(|| panic!("{path} is registered but not in the OpenAPI document"));
            // `.route("/api/v1/…", web::get()…)`: the method follows the path.
            let after = rest[path.len() + 1..].trim_start();
            if let Some(call) = after
                .strip_prefix(',')
                .map(str::trim_start)
                .and_then(|a| a.strip_prefix("web::"))
            {
                let method = &call[..call.find('(').unwrap()];
                assert!(
                    item.get(method).is_some(),
                    "{method} {path} is registered but not in the OpenAPI document"
                );
            }
            checked += 1;
        }
        assert!(checked >= 30, "only {checked} routes found in routes.rs");
    }

    /// Login and this document need no credentials: no 401 for them, every other
    /// operation has one.
    #[test]
    fn only_public_operations_lack_the_401() {
        let doc = doc();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let public = path == "/api/v1/openapi.json";
                assert_eq!(
                    operation["responses"].get("401").is_none(),
                    public,
                    "{method} {path}"
                );
            }
        }
        assert!(doc["paths"]["/api/v1/auth/login"]["post"]["security"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == &serde_json::json!({})));
    }

    /// Every operation that takes a body may answer 413 (a body over its size limit,
    /// docs/api.md); one without a body does not.
    #[test]
    fn operations_with_a_body_document_the_413() {
        let doc = doc();
        let mut with_body = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let has_body = operation.get("requestBody").is_some();
                with_body += usize::from(has_body);
                assert_eq!(
                    operation["responses"].get("413").is_some(),
                    has_body,
                    "{method} {path}"
                );
            }
        }
        assert!(with_body >= 10, "only {with_body} operations take a body");
        assert!(doc["paths"]["/api/v1/flows"]["post"]["responses"]
            .get("413")
            .is_some());
    }

    /// Every operation answers JSON errors with the one error body, and every `$ref`
    /// resolves.
    #[test]
    fn errors_share_the_error_body_and_refs_resolve() {
        let doc = doc();
        let text = doc.to_string();
        for (at, _) in text.match_indices("\"$ref\":\"#/components/schemas/") {
            let rest = &text[at + "\"$ref\":\"#/components/schemas/".len()..];
            let name = &rest[..rest.find('"').unwrap()];
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "{name} is referenced but not defined"
            );
        }
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let responses = operation["responses"].as_object().unwrap();
                assert!(!responses.is_empty(), "{method} {path} has no responses");
                for (status, response) in responses {
                    if status.starts_with('4') || status.starts_with('5') {
                        assert_eq!(
                            response["content"]["application/json"]["schema"]["$ref"],
                            "#/components/schemas/ErrorBody",
                            "{status} of {method} {path}"
                        );
                    }
                }
            }
        }
    }
}
