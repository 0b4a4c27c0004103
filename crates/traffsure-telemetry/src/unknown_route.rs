//! What no route of a service takes, answered with the error body every HTTP service
//! shares (`traffsure_core::ErrorBody`, docs/api.md#errors) instead of actix-web's empty
//! answers: a path no route has (404 `not_found`), and a method the path's routes do
//! not take (405 `method_not_allowed`).
//!
//! Mount [`unknown_route`] as an app's default service; a resource that lists its
//! methods itself (`web::resource(..).route(..).route(..)`) does not fall back to it and
//! takes [`method_not_allowed`] as its own default service.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use traffsure_core::ErrorBody;

/// An app's default service: 405 when a route's path matches but not its method
/// (actix-web tried the route and moved on), 404 when no route's path matches.
pub async fn unknown_route(req: HttpRequest) -> HttpResponse {
    if req.match_pattern().is_some() {
        return wrong_method(&req, None);
    }
    let message = format!("no such route: {} {}", req.method(), req.path());
    HttpResponse::NotFound().json(ErrorBody::new(404, "not_found", message))
}

/// A resource's default service: 405 with the error body and `Allow: {allow}` (the
/// methods its routes take, such as `"GET, POST"`).
pub fn method_not_allowed(allow: &'static str) -> actix_web::Route {
    web::to(move |req: HttpRequest| async move { wrong_method(&req, Some(allow)) })
}

fn wrong_method(req: &HttpRequest, allow: Option<&str>) -> HttpResponse {
    let message = format!("{} is not a method of {}", req.method(), req.path());
    let mut response = HttpResponse::build(StatusCode::METHOD_NOT_ALLOWED);
    if let Some(allow) = allow {
        response.insert_header((header::ALLOW, allow));
    }
    response.json(ErrorBody::new(405, "method_not_allowed", message))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use actix_web::{test, web, App, HttpResponse};

    use super::*;

    async fn read(response: actix_web::dev::ServiceResponse) -> (u16, Option<String>, ErrorBody) {
        let status = response.status().as_u16();
        let allow = response
            .headers()
            .get(header::ALLOW)
            .map(|v| v.to_str().unwrap().to_string());
        (status, allow, test::read_body_json(response).await)
    }

    #[actix_web::test]
    async fn unknown_paths_and_methods_answer_the_error_body() {
        let app = test::init_service(
            App::new()
                .default_service(web::to(unknown_route))
                .route("/one", web::get().to(HttpResponse::Ok))
                .service(
                    web::resource("/two")
                        .route(web::get().to(HttpResponse::Ok))
                        .route(web::post().to(HttpResponse::Ok))
                        .default_service(method_not_allowed("GET, POST")),
                ),
        )
        .await;
        let (status, allow, body) = read(
            test::call_service(&app, test::TestRequest::get().uri("/nosuch").to_request()).await,
        )
        .await;
        assert_eq!((status, allow), (404, None));
        assert_eq!(
            body,
            ErrorBody::new(404, "not_found", "no such route: GET /nosuch")
        );
        let (status, allow, body) =
            read(test::call_service(&app, test::TestRequest::put().uri("/one").to_request()).await)
                .await;
        assert_eq!((status, allow), (405, None));
        assert_eq!(
            body,
            ErrorBody::new(405, "method_not_allowed", "PUT is not a method of /one")
        );
        let (status, allow, body) = read(
            test::call_service(&app, test::TestRequest::delete().uri("/two").to_request()).await,
        )
        .await;
        assert_eq!((status, allow.as_deref()), (405, Some("GET, POST")));
        assert_eq!(
            (body.status, body.code.as_str()),
            (405, "method_not_allowed")
        );
        let ok = test::call_service(&app, test::TestRequest::post().uri("/two").to_request()).await;
        assert_eq!(ok.status(), 200);
    }
}
