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
    "/traffic-sources",
    "/traffic-sources/{id}",
    "/affiliate-networks",
    "/affiliate-networks/{id}",
    "/offers",
    "/offers/{id}",
    "/landers",
    "/landers/{id}",
    "/costs",
];

const HTML: &str = "text/html; charset=utf-8";
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

fn asset(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok().content_type(content_type).body(body)
}

pub async fn shell() -> HttpResponse {
    asset(HTML, include_str!("../static/index.html"))
}

pub async fn login_page() -> HttpResponse {
    asset(HTML, include_str!("../static/login.html"))
}

/// `app.js` with the postback outcome words in place of its placeholder, so a word added
/// to the vocabulary appears in the panel's filter by itself.
pub async fn app_js() -> HttpResponse {
    static SCRIPT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let script = SCRIPT.get_or_init(|| {
        let words = serde_json::json!(crate::api::postback_outcomes::words()).to_string();
        include_str!("../static/app.js").replace("/*POSTBACK_OUTCOMES*/[]", &words)
    });
    asset(JAVASCRIPT, script.as_str())
}

/// The objects' pages and the flow editor's funnel builder, loaded before `app.js`.
pub async fn objects_js() -> HttpResponse {
    asset(JAVASCRIPT, include_str!("../static/objects.js"))
}

/// The Costs page (cost updates), loaded before `app.js`.
pub async fn costs_js() -> HttpResponse {
    asset(JAVASCRIPT, include_str!("../static/costs.js"))
}

pub async fn app_css() -> HttpResponse {
    asset(CSS, include_str!("../static/app.css"))
}

pub async fn objects_css() -> HttpResponse {
    asset(CSS, include_str!("../static/objects.css"))
}

#[cfg(test)]
mod tests {
    /// The placeholder the outcome words replace is in the script.
    #[test]
    fn the_script_has_the_outcome_placeholder() {
        assert_eq!(
            include_str!("../static/app.js")
                .matches("/*POSTBACK_OUTCOMES*/[]")
                .count(),
            1
        );
    }
}
