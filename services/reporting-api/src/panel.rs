//! The admin panel: one HTML shell for every page (drawn by `app.js` from the path, with
//! its filters in the query string so a view can be shared as a link), the login page
//! and their assets, all compiled into the binary. The data comes from the JSON API.

use actix_web::HttpResponse;

/// The panel's pages, each answered with the same shell.
pub const PAGES: &[&str] = &[
    "/",
    "/flows",
    "/flows/new",
    "/flows/{id}",
    "/clicks",
    "/conversions",
    "/postbacks",
    "/postbacks/{id}",
    "/outbound",
    "/reports",
];

pub async fn shell() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(include_str!("../static/index.html"))
}

pub async fn login_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(include_str!("../static/login.html"))
}

pub async fn app_js() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .body(include_str!("../static/app.js"))
}

pub async fn app_css() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .body(include_str!("../static/app.css"))
}
