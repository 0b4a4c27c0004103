//! Query-string filters shared by the list pages and reports: parsed strictly, so a bad
//! or unknown filter is a 422 naming it, and turned into bound SQL conditions.

use std::collections::HashMap;

use traffsure_core::vocab::Vocabulary;
use traffsure_events::BotReason;
use traffsure_kafka::FlowRegistry;

use crate::error::ApiError;
use crate::object_names::OBJECT_DIMENSIONS;
use crate::sql::{check_timezone_shape, parse_datetime, Arg, Sql};
use crate::users::FlowScope;

/// The raw query string, with each name checked against what the endpoint accepts.
pub struct Params {
    values: HashMap<String, String>,
    /// Parameters sent under an older name: their name → the name sent, which is the
    /// one a refusal names.
    sent_as: HashMap<&'static str, &'static str>,
}

impl Params {
    pub fn new(raw: HashMap<String, String>, allowed: &[&str]) -> Result<Self, ApiError> {
        Self::with_aliases(raw, allowed, &[])
    }

    /// Like `new`, also accepting each `(alias, name)`'s older name `alias` for `name`
    /// (one of the two, not both).
    pub fn with_aliases(
        mut raw: HashMap<String, String>,
        allowed: &[&str],
        aliases: &[(&'static str, &'static str)],
    ) -> Result<Self, ApiError> {
        let known = |k: &str| allowed.contains(&k) || aliases.iter().any(|(alias, _)| *alias == k);
        if let Some(unknown) = raw.keys().find(|k| !known(k)) {
            return Err(ApiError::invalid(
                unknown.clone(),
                format!(
                    "unknown parameter {unknown:?}; accepted: {}",
                    allowed.join(", ")
                ),
            ));
        }
        let mut sent_as = HashMap::new();
        for &(alias, name) in aliases {
            let Some(value) = raw.remove(alias) else {
                continue;
            };
            if raw.contains_key(name) {
                return Err(ApiError::invalid(
                    alias,
                    format!("{alias} is another name for {name}: send one of them"),
                ));
            }
            raw.insert(name.to_string(), value);
            sent_as.insert(name, alias);
        }
        Ok(Self {
            values: raw,
            sent_as,
        })
    }

    /// The name a parameter was sent under, for the `field` of a refusal.
    pub fn field<'a>(&self, name: &'a str) -> &'a str {
        self.sent_as.get(name).copied().unwrap_or(name)
    }

    /// A non-empty value, trimmed.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    pub fn flow(&self, registry: &FlowRegistry) -> Result<Option<u32>, ApiError> {
        let Some(value) = self.get("flow") else {
            return Ok(None);
        };
        if let Ok(id) = value.parse::<u32>() {
            return Ok(Some(id));
        }
        registry
            .resolve(value)
            .map(|f| Some(f.id))
            .ok_or_else(|| ApiError::invalid("flow", format!("no flow with id or slug {value:?}")))
    }

    pub fn country(&self) -> Result<Option<String>, ApiError> {
        let Some(value) = self.get("country") else {
            return Ok(None);
        };
        if value.len() == 2 && value.bytes().all(|b| b.is_ascii_alphabetic()) {
            Ok(Some(value.to_ascii_uppercase()))
        } else {
            Err(ApiError::invalid(
                "country",
                format!("country must be a two-letter code, got {value:?}"),
            ))
        }
    }

    pub fn text(&self, name: &str, max: usize) -> Result<Option<String>, ApiError> {
        match self.get(name) {
            Some(v) if v.chars().count() > max => {
                let name = self.field(name);
                Err(ApiError::invalid(
                    name,
                    format!("{name} is longer than {max} characters"),
                ))
            }
            other => Ok(other.map(String::from)),
        }
    }

    pub fn one_of(
        &self,
        name: &str,
        choices: &[&'static str],
    ) -> Result<Option<&'static str>, ApiError> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        choices
            .iter()
            .find(|c| c.eq_ignore_ascii_case(value))
            .copied()
            .map(Some)
            .ok_or_else(|| {
                let name = self.field(name);
                ApiError::invalid(
                    name,
                    format!(
                        "{name} must be one of {}, got {value:?}",
                        choices.join(", ")
                    ),
                )
            })
    }

    /// One of an enum's words (any case), as its value.
    pub fn word<V: Vocabulary>(&self, name: &str) -> Result<Option<V>, ApiError> {
        Ok(self.one_of(name, &V::words())?.and_then(V::from_word))
    }

    /// Filters on a click's visitor columns (`AGENT_FILTERS`): each one given, as its
    /// column and value; `bot_reason` must be one of its words.
    pub fn agent_filters(&self) -> Result<Vec<(&'static str, String)>, ApiError> {
        let mut filters = Vec::new();
        for &column in AGENT_FILTERS {
            let value = if column == "bot_reason" {
                self.word::<BotReason>(column)?
                    .map(|reason| reason.word().to_string())
            } else {
                self.text(column, 200)?
            };
            if let Some(value) = value {
                filters.push((column, value));
            }
        }
        Ok(filters)
    }

    /// Filters on the objects an event went through (`OBJECT_FILTERS`, each an object's
    /// id), as the id column and the id.
    pub fn object_filters(&self) -> Result<Vec<(&'static str, u32)>, ApiError> {
        let mut filters = Vec::new();
        for d in OBJECT_DIMENSIONS {
            if let Some(value) = self.get(d.name) {
                let id = value.parse::<u32>().map_err(|_| {
                    ApiError::invalid(
                        d.name,
                        format!("{} must be an object id (a number), got {value:?}", d.name),
                    )
                })?;
                filters.push((d.column, id));
            }
        }
        Ok(filters)
    }

    /// A comma-separated list of `choices` (any case), in the order given: empty when the
    /// parameter is absent.
    pub fn list_of(
        &self,
        name: &str,
        choices: &[&'static str],
    ) -> Result<Vec<&'static str>, ApiError> {
        let Some(value) = self.get(name) else {
            return Ok(Vec::new());
        };
        value
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(|v| {
                choices
                    .iter()
                    .find(|c| c.eq_ignore_ascii_case(v))
                    .copied()
                    .ok_or_else(|| {
                        let name = self.field(name);
                        ApiError::invalid(
                            name,
                            format!(
                                "{name} must be one or more of {} (comma-separated), got {v:?}",
                                choices.join(", ")
                            ),
                        )
                    })
            })
            .collect()
    }

    /// Each of `columns` given as a parameter (at most 200 characters), as the column and
    /// its value.
    pub fn text_filters(
        &self,
        columns: &[&'static str],
    ) -> Result<Vec<(&'static str, String)>, ApiError> {
        let mut filters = Vec::new();
        for &column in columns {
            if let Some(value) = self.text(column, 200)? {
                filters.push((column, value));
            }
        }
        Ok(filters)
    }

    /// `true` or `false` (any case).
    pub fn flag(&self, name: &str) -> Result<Option<bool>, ApiError> {
        Ok(self.one_of(name, &["true", "false"])?.map(|v| v == "true"))
    }

    pub fn number<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, ApiError> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        value.parse().map(Some).map_err(|_| {
            let name = self.field(name);
            ApiError::invalid(name, format!("{name} must be a number, got {value:?}"))
        })
    }

    pub fn timezone(&self) -> Result<String, ApiError> {
        match self.get("timezone") {
            None => Ok("UTC".into()),
            Some(tz) => {
                check_timezone_shape(tz)?;
                Ok(tz.to_string())
            }
        }
    }

    /// `from` / `to` as `YYYY-MM-DD HH:MM:SS` (a bare `to` date includes that whole day).
    pub fn range(&self) -> Result<(Option<String>, Option<String>), ApiError> {
        let from = self
            .get("from")
            .map(|v| parse_datetime("from", v, false))
            .transpose()?;
        let to = self
            .get("to")
            .map(|v| parse_datetime("to", v, true))
            .transpose()?;
        if let (Some(f), Some(t)) = (&from, &to) {
            if f > t {
                return Err(ApiError::invalid("to", "to is before from"));
            }
        }
        Ok((from, to))
    }

    pub fn page_size(&self) -> Result<u64, ApiError> {
        let size = self.number::<u64>("limit")?.unwrap_or(50);
        if (1..=500).contains(&size) {
            Ok(size)
        } else {
            Err(ApiError::invalid(
                "limit",
                "limit must be between 1 and 500",
            ))
        }
    }
}

/// `time_column` between the range's bounds, both read in `timezone`.
pub fn range_condition(
    sql: &mut Sql,
    time_column: &'static str,
    from: &Option<String>,
    to: &Option<String>,
    timezone: &str,
) {
    if let Some(from) = from {
        sql.push(" AND ").push(time_column).push(" >= toDateTime(");
        sql.str(from.as_str()).push(", ").str(timezone).push(")");
    }
    if let Some(to) = to {
        sql.push(" AND ").push(time_column).push(" <= toDateTime(");
        sql.str(to.as_str()).push(", ").str(timezone).push(")");
    }
}

/// The flows a query reads, the one condition every query over flow data adds where it
/// is built: the `flow` the request filters by, within the flows its user sees
/// (`scope`). A flow outside the scope reads as a flow without data (`AND 0`), so an
/// answer never tells whether it exists; a restricted user without a `flow` filter
/// reads only their flows (`column IN (…)`, bound values).
pub fn flow_condition(sql: &mut Sql, column: &'static str, flow: Option<u32>, scope: &FlowScope) {
    match (flow, scope) {
        (Some(flow), scope) if scope.allows(flow) => eq(sql, column, Arg::U32(flow)),
        (Some(_), _) => {
            sql.push(" AND 0");
        }
        (None, FlowScope::All) => {}
        (None, FlowScope::Only(ids)) if ids.is_empty() => {
            sql.push(" AND 0");
        }
        (None, FlowScope::Only(ids)) => {
            sql.push(" AND ").push(column).push(" IN (");
            for (n, id) in ids.iter().enumerate() {
                if n > 0 {
                    sql.push(", ");
                }
                sql.arg(Arg::U32(*id));
            }
            sql.push(")");
        }
    }
}

/// The visitor columns of clicks (migration 0007) the click list and reports filter by.
pub const AGENT_FILTERS: &[&str] = &[
    "bot_reason",
    "browser_family",
    "browser_major",
    "os_family",
    "os_major",
    "device_family",
    "device_brand",
    "device_model",
];

/// Columns a click and its conversions both carry (a conversion copies them from its
/// click), each filtered by its exact value: with the time range, flow, objects, country,
/// source and sub_id, what takes a report's group keys to the clicks and conversions
/// behind a cell.
pub const CLICK_FILTERS: &[&str] = &[
    "sub1", "sub2", "sub3", "sub4", "sub5", "sub6", "sub7", "sub8", "sub9", "sub10", "device",
    "os", "browser",
];

/// `column IN (values)`, nothing when `values` is empty.
pub fn in_list(sql: &mut Sql, column: &'static str, values: &[&'static str]) {
    if values.is_empty() {
        return;
    }
    sql.push(" AND ").push(column).push(" IN (");
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.str(*value);
    }
    sql.push(")");
}

/// The object filters the logs and reports take: `traffic_source`, `offer`, `lander`,
/// `network`, each an object's id.
pub const OBJECT_FILTERS: &[&str] = &["traffic_source", "offer", "lander", "network"];

pub fn eq(sql: &mut Sql, column: &'static str, value: Arg) {
    sql.push(" AND ").push(column).push(" = ").arg(value);
}

/// A page cursor `<time>_<id>` (milliseconds or seconds, then the row id).
pub fn cursor(params: &Params) -> Result<Option<(i64, String)>, ApiError> {
    let Some(value) = params.get("cursor") else {
        return Ok(None);
    };
    let bad = || ApiError::invalid("cursor", "cursor is not one this API handed out");
    let (time, id) = value.split_once('_').ok_or_else(bad)?;
    let time: i64 = time.parse().map_err(|_| bad())?;
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(bad());
    }
    Ok(Some((time, id.to_string())))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        let raw = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Params::new(
            raw,
            &[
                "country", "from", "to", "cursor", "limit", "status", "offer",
            ],
        )
        .unwrap()
    }

    fn field(err: ApiError) -> String {
        match err {
            ApiError::Invalid { field, .. } => field,
            other => panic!("not a 422: {other}"),
        }
    }

    #[test]
    fn unknown_parameters_are_named() {
        let raw = HashMap::from([("contry".to_string(), "DE".to_string())]);
        assert_eq!(
            field(Params::new(raw, &["country"]).err().unwrap()),
            "contry"
        );
    }

    #[test]
    fn filters_are_checked() {
        assert_eq!(
            params(&[("country", "de")]).country().unwrap(),
            Some("DE".into())
        );
        assert_eq!(
            field(params(&[("country", "DE' --")]).country().unwrap_err()),
            "country"
        );
        assert_eq!(
            field(
                params(&[("from", "2026-02-01"), ("to", "2026-01-01")])
                    .range()
                    .unwrap_err()
            ),
            "to"
        );
        assert_eq!(
            field(params(&[("limit", "0")]).page_size().unwrap_err()),
            "limit"
        );
        assert_eq!(params(&[]).page_size().unwrap(), 50);
        assert_eq!(
            field(cursor(&params(&[("cursor", "12_a'b")])).unwrap_err()),
            "cursor"
        );
        assert_eq!(
            cursor(&params(&[("cursor", "1700000000000_abc")])).unwrap(),
            Some((1_700_000_000_000, "abc".into()))
        );
        assert_eq!(
            field(
                params(&[("status", "won")])
                    .one_of("status", &["approved"])
                    .unwrap_err()
            ),
            "status"
        );
        assert_eq!(
            params(&[("status", "TRUE")]).flag("status").unwrap(),
            Some(true)
        );
        assert_eq!(
            params(&[("status", "false")]).flag("status").unwrap(),
            Some(false)
        );
        assert_eq!(params(&[]).flag("status").unwrap(), None);
        assert_eq!(
            field(params(&[("status", "1")]).flag("status").unwrap_err()),
            "status"
        );
    }

    #[test]
    fn an_alias_reads_as_its_name_and_refusals_name_what_was_sent() {
        let raw = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let aliases = &[("status", "response_status")];
        let allowed = &["response_status"];
        let old = Params::with_aliases(raw(&[("status", "404")]), allowed, aliases).unwrap();
        assert_eq!(old.number::<u16>("response_status").unwrap(), Some(404));
        let bad = Params::with_aliases(raw(&[("status", "abc")]), allowed, aliases).unwrap();
        assert_eq!(
            field(bad.number::<u16>("response_status").unwrap_err()),
            "status"
        );
        let new =
            Params::with_aliases(raw(&[("response_status", "abc")]), allowed, aliases).unwrap();
        assert_eq!(
            field(new.number::<u16>("response_status").unwrap_err()),
            "response_status"
        );
        let both = raw(&[("status", "404"), ("response_status", "200")]);
        assert_eq!(
            field(Params::with_aliases(both, allowed, aliases).err().unwrap()),
            "status"
        );
    }

    #[test]
    fn words_come_from_the_vocabulary() {
        use traffsure_events::ConversionStatus;
        assert_eq!(
            params(&[("status", "Pending")])
                .word::<ConversionStatus>("status")
                .unwrap(),
            Some(ConversionStatus::Pending)
        );
        assert_eq!(
            field(
                params(&[("status", "won")])
                    .word::<ConversionStatus>("status")
                    .unwrap_err()
            ),
            "status"
        );
        assert_eq!(
            params(&[]).word::<ConversionStatus>("status").unwrap(),
            None
        );
    }

    #[test]
    fn object_filters_are_ids() {
        assert_eq!(
            params(&[("offer", " 12 ")]).object_filters().unwrap(),
            vec![("offer_id", 12)]
        );
        assert_eq!(
            field(params(&[("offer", "VPN")]).object_filters().unwrap_err()),
            "offer"
        );
        assert!(params(&[]).object_filters().unwrap().is_empty());
        let names: Vec<&str> = OBJECT_DIMENSIONS.iter().map(|d| d.name).collect();
        assert_eq!(names, OBJECT_FILTERS);
    }

    #[test]
    fn flow_conditions_stay_within_the_scope() {
        let text = |flow: Option<u32>, scope: &FlowScope| {
            let mut sql = Sql::new("WHERE 1");
            flow_condition(&mut sql, "flow_id", flow, scope);
            sql.text().to_string()
        };
        let all = FlowScope::All;
        let some = FlowScope::of(&[3, 5]);
        assert_eq!(text(None, &all), "WHERE 1");
        assert_eq!(text(Some(7), &all), "WHERE 1 AND flow_id = ?");
        assert_eq!(text(None, &some), "WHERE 1 AND flow_id IN (?, ?)");
        assert_eq!(text(Some(5), &some), "WHERE 1 AND flow_id = ?");
        assert_eq!(text(Some(7), &some), "WHERE 1 AND 0");
        let none = FlowScope::Only(Default::default());
        assert_eq!(text(None, &none), "WHERE 1 AND 0");
    }

    #[test]
    fn ranges_bind_their_values() {
        let mut sql = Sql::new("WHERE 1");
        range_condition(
            &mut sql,
            "ts",
            &Some("2026-01-01 00:00:00".into()),
            &None,
            "UTC",
        );
        assert_eq!(sql.text(), "WHERE 1 AND ts >= toDateTime(?, ?)");
    }

    #[test]
    fn lists_take_known_words_and_name_a_stranger() {
        let p = params(&[("status", "Approved, pending")]);
        assert_eq!(
            p.list_of("status", &["approved", "pending", "rejected"])
                .unwrap(),
            ["approved", "pending"]
        );
        assert!(p.list_of("offer", &["x"]).unwrap().is_empty());
        let p = params(&[("status", "approved,lost")]);
        let err = p.list_of("status", &["approved"]).unwrap_err();
        assert_eq!(field(err), "status");
        let mut sql = Sql::new("SELECT 1 WHERE 1");
        in_list(&mut sql, "status", &["approved", "pending"]);
        in_list(&mut sql, "kind", &[]);
        assert_eq!(sql.text(), "SELECT 1 WHERE 1 AND status IN (?, ?)");
    }
}
