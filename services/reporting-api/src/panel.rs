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
    "/outbound/global",
    "/reports",
    "/traffic-sources",
    "/traffic-sources/{id}",
    "/affiliate-networks",
    "/affiliate-networks/{id}",
    "/offers",
    "/offers/{id}",
    "/landers",
    "/landers/{id}",
    "/users",
    "/audit",
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

/// The time-zone setting and the date-range picker.
pub async fn dates_js() -> HttpResponse {
    asset(JAVASCRIPT, include_str!("../static/dates.js"))
}

/// The lists' tables: columns to choose and sort, CSV.
pub async fn lists_js() -> HttpResponse {
    asset(JAVASCRIPT, include_str!("../static/lists.js"))
}

/// The dashboard's and reports' charts, drawn with uPlot.
pub async fn charts_js() -> HttpResponse {
    asset(JAVASCRIPT, include_str!("../static/charts.js"))
}

/// uPlot 1.6.31 (MIT, `static/vendor/uPlot.LICENSE`), vendored so the panel needs no
/// CDN and works offline.
pub async fn uplot_js() -> HttpResponse {
    asset(
        JAVASCRIPT,
        include_str!("../static/vendor/uPlot.iife.min.js"),
    )
}

pub async fn uplot_css() -> HttpResponse {
    asset(CSS, include_str!("../static/vendor/uPlot.min.css"))
}

/// The flow editor's forms (rules, destinations, outbound postbacks, statuses), loaded
/// before `app.js`, with the rule fields and macros of `traffsure_core` and the fields
/// the suggestions endpoint knows in place of their placeholders.
pub async fn editors_js() -> HttpResponse {
    static SCRIPT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let script = SCRIPT.get_or_init(|| {
        let json = |words: &[&str]| serde_json::json!(words).to_string();
        let suggested: Vec<&str> = crate::api::suggestions::FIELDS
            .iter()
            .map(|(field, _)| *field)
            .collect();
        include_str!("../static/editors.js")
            .replace(
                "/*RULE_FIELDS*/[]",
                &json(traffsure_core::flow::RULE_FIELDS),
            )
            .replace(
                "/*OUTBOUND_MACROS*/[]",
                &json(traffsure_core::flow::OUTBOUND_MACROS),
            )
            .replace(
                "/*DESTINATION_MACROS*/[]",
                &json(traffsure_core::flow::DESTINATION_MACROS),
            )
            .replace("/*SUGGESTED_FIELDS*/[]", &json(&suggested))
    });
    asset(JAVASCRIPT, script.as_str())
}

pub async fn editors_css() -> HttpResponse {
    asset(CSS, include_str!("../static/editors.css"))
}

/// The Users page (owners): users, roles, flow restrictions and API keys.
pub async fn users_js() -> HttpResponse {
    asset(JAVASCRIPT, include_str!("../static/users.js"))
}

/// The Audit log page.
pub async fn audit_js() -> HttpResponse {
    asset(JAVASCRIPT, include_str!("../static/audit.js"))
}

/// The editor of outbound postbacks beyond one flow and the Global Postbacks page.
pub async fn postbacks_scope_js() -> HttpResponse {
    asset(JAVASCRIPT, include_str!("../static/postbacks-scope.js"))
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

    /// Each placeholder `editors_js` fills is in the script once.
    #[test]
    fn the_editors_script_has_its_placeholders() {
        let script = include_str!("../static/editors.js");
        for placeholder in [
            "/*RULE_FIELDS*/[]",
            "/*OUTBOUND_MACROS*/[]",
            "/*DESTINATION_MACROS*/[]",
            "/*SUGGESTED_FIELDS*/[]",
        ] {
            assert_eq!(script.matches(placeholder).count(), 1, "{placeholder}");
        }
    }
}
