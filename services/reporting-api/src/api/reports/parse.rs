//! A report's query string → a typed `ReportRequest`: the dimensions to group by, the
//! filters, the sort key and the output format, each checked so a bad value is a 422
//! naming its parameter. Nothing here touches ClickHouse.

use traffsure_kafka::FlowRegistry;

use crate::error::ApiError;
use crate::filters::{Params, AGENT_FILTERS, OBJECT_FILTERS};
use crate::object_names::name_column;
use crate::users::FlowScope;

/// Every parameter a report accepts besides the visitor and object filters
/// (`AGENT_FILTERS`, `OBJECT_FILTERS`).
pub const PARAMETERS: &[&str] = &[
    "group_by",
    "from",
    "to",
    "timezone",
    "flow",
    "country",
    "source",
    "sub_id",
    "goal",
    "click_missing",
    "over_cap",
    "asn",
    "datacenter",
    "rate_exceeded",
    "sort",
    "format",
    "unique_clicks",
];

/// Every parameter a report accepts: `PARAMETERS`, the visitor and the object filters.
pub fn parameters() -> Vec<&'static str> {
    PARAMETERS
        .iter()
        .chain(AGENT_FILTERS)
        .chain(OBJECT_FILTERS)
        .copied()
        .collect()
}

/// Every dimension a report groups by.
#[rustfmt::skip]
pub const DIMENSIONS: &[&str] = &[
    "day",
    "hour",
    "flow",
    "traffic_source",
    "offer",
    "lander",
    "network",
    "country",
    "source",
    "sub_id",
    "sub1",
    "sub2",
    "sub3",
    "sub4",
    "sub5",
    "sub6",
    "sub7",
    "sub8",
    "sub9",
    "sub10",
    "goal",
    "device",
    "os",
    "browser",
    "browser_family",
    "browser_major",
    "browser_minor",
    "os_family",
    "os_major",
    "os_minor",
    "device_family",
    "device_brand",
    "device_model",
    "bot_reason",
    "asn",
    "as_org",
    "datacenter",
    "rate_exceeded",
];

/// Dimensions and filters of the clicks alone, the last fourteen: the visitor's ten (user
/// agent, bot reason), then the address's four fraud signals. The rollups lack them;
/// conversions carry their click's (`super::visitor`).
pub const CLICK_ONLY: &[&str] = DIMENSIONS.split_at(DIMENSIONS.len() - 14).1;

/// Every metric a report returns, in order.
pub const METRICS: &[&str] = &[
    "clicks",
    "unique_clicks",
    "bots",
    "conversions",
    "approved",
    "pending",
    "rejected",
    "cr",
    "revenue",
    "cost",
    "profit",
    "roi",
    "epc",
    "without_rate",
    "lander_views",
    "lander_clicks",
    "lander_ctr",
    "offer_clicks",
    "offer_cr",
    "impressions",
    "ctr",
    "payout",
    "cpc",
    "cpa",
    "cost_source",
];

/// What a report asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportRequest {
    /// One to four dimensions from `DIMENSIONS`, in the order asked.
    pub dims: Vec<&'static str>,
    pub filters: Filters,
    pub sort: Sort,
    pub format: Format,
}

/// Which rows a report counts; a missing bound of the range is filled in by the query.
#[derive(Debug, Clone, PartialEq)]
pub struct Filters {
    /// Merging unique-click states is the costly part of a rollup read: only on request.
    pub unique_clicks: bool,
    pub flow: Option<u32>,
    /// The flows the report's user sees (set by the handler from the request's user).
    pub scope: FlowScope,
    pub country: Option<String>,
    pub source: Option<String>,
    pub sub_id: Option<String>,
    pub goal: Option<String>,
    /// Only conversions made without their click (`true`) or only those with it (`false`).
    pub click_missing: Option<bool>,
    /// Only conversions over a cap (`true`) or only those within caps (`false`)
    /// (docs/caps.md).
    pub over_cap: Option<bool>,
    /// Filters on the clicks' visitor columns (`crate::filters::AGENT_FILTERS`), as
    /// column and value; conversions have no such columns and stay whole.
    pub agent: Vec<(&'static str, String)>,
    /// Only events that went through these objects, as id column and id.
    pub objects: Vec<(&'static str, u32)>,
    /// Only clicks of this autonomous system, of datacenter addresses (or not), over the
    /// per-address rate (or not).
    pub asn: Option<u32>,
    pub datacenter: Option<bool>,
    pub rate_exceeded: Option<bool>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub timezone: String,
}

impl Filters {
    /// Whether a filter names a `CLICK_ONLY` column (visitor details, fraud signals): the
    /// rollups lack them, and conversions read them from their click.
    pub fn on_click_only_columns(&self) -> bool {
        self.asn.is_some()
            || self.datacenter.is_some()
            || self.rate_exceeded.is_some()
            || !self.agent.is_empty()
    }
}

/// A grouped dimension, its name column (`flow_name`, `offer_name`, ...) or a metric,
/// ascending unless `descending`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sort {
    pub key: String,
    pub descending: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Format {
    Json,
    Csv,
}

/// Reads a report's parameters; `registry` resolves a flow given by its slug.
pub fn request(params: &Params, registry: &FlowRegistry) -> Result<ReportRequest, ApiError> {
    let dims = group_by(params.get("group_by").unwrap_or("day"))?;
    let timezone = params.timezone()?;
    let (from, to) = params.range()?;
    let format = match params.one_of("format", &["json", "csv"])? {
        Some("csv") => Format::Csv,
        _ => Format::Json,
    };
    let sort = sort(params.get("sort"), &dims)?;
    let unique_clicks = params.one_of("unique_clicks", &["true", "false"])? == Some("true");
    if sort.key == "unique_clicks" && !unique_clicks {
        return Err(ApiError::invalid(
            "sort",
            "sorting by unique_clicks needs unique_clicks=true",
        ));
    }
    let filters = Filters {
        unique_clicks,
        flow: params.flow(registry)?,
        scope: FlowScope::All,
        country: params.country()?,
        source: params.text("source", 200)?,
        sub_id: params.text("sub_id", 200)?,
        goal: params.text("goal", 100)?,
        click_missing: params.flag("click_missing")?,
        over_cap: params.flag("over_cap")?,
        agent: params.agent_filters()?,
        objects: params.object_filters()?,
        asn: params
            .get("asn")
            .map(|v| {
                let digits = v
                    .strip_prefix("AS")
                    .or_else(|| v.strip_prefix("as"))
                    .unwrap_or(v);
                digits.parse::<u32>().map_err(|_| {
                    ApiError::invalid("asn", format!("asn must be an AS number, got {v:?}"))
                })
            })
            .transpose()?,
        datacenter: params.flag("datacenter")?,
        rate_exceeded: params.flag("rate_exceeded")?,
        from,
        to,
        timezone,
    };
    Ok(ReportRequest {
        dims,
        filters,
        sort,
        format,
    })
}

/// `group_by`: comma-separated dimensions, any case, at most four, none twice.
fn group_by(value: &str) -> Result<Vec<&'static str>, ApiError> {
    let dims: Vec<&'static str> = value
        .split(',')
        .map(|d| {
            let d = d.trim();
            DIMENSIONS
                .iter()
                .find(|x| x.eq_ignore_ascii_case(d))
                .copied()
                .ok_or_else(|| {
                    ApiError::invalid(
                        "group_by",
                        format!(
                            "cannot group by {d:?}; choose from {}",
                            DIMENSIONS.join(", ")
                        ),
                    )
                })
        })
        .collect::<Result<_, _>>()?;
    if dims.len() > 4 {
        return Err(ApiError::invalid(
            "group_by",
            "group by at most four dimensions",
        ));
    }
    if (1..dims.len()).any(|i| dims[..i].contains(&dims[i])) {
        return Err(ApiError::invalid("group_by", "a dimension is listed twice"));
    }
    Ok(dims)
}

/// `sort`: a grouped dimension, a grouped dimension's name column or a metric, `-` first
/// for descending; by default the first dimension, ascending.
fn sort(value: Option<&str>, dims: &[&'static str]) -> Result<Sort, ApiError> {
    let Some(value) = value else {
        return Ok(Sort {
            key: dims.first().copied().unwrap_or("day").to_string(),
            descending: false,
        });
    };
    let (key, descending) = value
        .strip_prefix('-')
        .map_or((value, false), |k| (k, true));
    let known = dims.contains(&key)
        || METRICS.contains(&key)
        || key == "flow_name"
        || dims.iter().any(|d| name_column(d) == Some(key));
    if !known {
        return Err(ApiError::invalid(
            "sort",
            format!(
                "cannot sort by {key:?}: use a grouped dimension or a metric, with - for descending"
            ),
        ));
    }
    Ok(Sort {
        key: key.to_string(),
        descending,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn click_only_dimensions_are_the_visitor_columns() {
        assert_eq!(CLICK_ONLY.first(), Some(&"browser_family"));
        assert_eq!(CLICK_ONLY.last(), Some(&"rate_exceeded"));
        assert_eq!(CLICK_ONLY.len(), 14);
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<ReportRequest, ApiError> {
        let raw = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        request(&Params::new(raw, &parameters())?, &FlowRegistry::new())
    }

    fn field(result: Result<ReportRequest, ApiError>) -> String {
        match result {
            Err(ApiError::Invalid { field, .. }) => field,
            other => panic!("not a 422: {other:?}"),
        }
    }

    #[test]
    fn defaults_to_days_as_json_sorted_by_day() {
        let request = parse(&[]).unwrap();
        assert_eq!(request.dims, ["day"]);
        assert_eq!(request.format, Format::Json);
        assert_eq!(
            request.sort,
            Sort {
                key: "day".into(),
                descending: false
            }
        );
        assert_eq!(request.filters.timezone, "UTC");
        assert!(!request.filters.unique_clicks);
        assert_eq!((request.filters.from, request.filters.to), (None, None));
    }

    #[test]
    fn reads_every_parameter() {
        let request = parse(&[
            ("group_by", "Flow, country"),
            ("sort", "-clicks"),
            ("format", "csv"),
            ("unique_clicks", "true"),
            ("flow", "7"),
            ("offer", "12"),
            ("country", "de"),
            ("goal", "sale"),
            ("click_missing", "true"),
            ("from", "2026-01-01"),
            ("to", "2026-01-31"),
        ])
        .unwrap();
        assert_eq!(request.dims, ["flow", "country"]);
        assert_eq!(request.sort.key, "clicks");
        assert!(request.sort.descending);
        assert_eq!(request.format, Format::Csv);
        assert!(request.filters.unique_clicks);
        assert_eq!(request.filters.flow, Some(7));
        assert_eq!(request.filters.objects, vec![("offer_id", 12)]);
        assert_eq!(request.filters.country.as_deref(), Some("DE"));
        assert_eq!(request.filters.click_missing, Some(true));
        assert_eq!(request.filters.to.as_deref(), Some("2026-01-31 23:59:59"));
    }

    #[test]
    fn refusals_name_their_parameter() {
        for (pairs, expected) in [
            (&[("group_by", "day,weather")][..], "group_by"),
            (&[("group_by", "day,day")], "group_by"),
            (&[("group_by", "day,hour,flow,country,source")], "group_by"),
            (&[("sort", "-profitability")], "sort"),
            (&[("sort", "country")], "sort"),
            (&[("sort", "unique_clicks")], "sort"),
            (&[("unique_clicks", "maybe")], "unique_clicks"),
            (&[("format", "xlsx")], "format"),
            (&[("click_missing", "yes")], "click_missing"),
            (&[("flow", "no-such-flow")], "flow"),
            (&[("lander", "-1")], "lander"),
            (&[("sort", "offer_name")], "sort"),
            (&[("colour", "red")], "colour"),
        ] {
            assert_eq!(field(parse(pairs)), expected, "{pairs:?}");
        }
    }
}
