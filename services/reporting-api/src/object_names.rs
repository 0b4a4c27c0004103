//! The objects events carry by id (traffic source, offer, lander, affiliate network) as
//! report dimensions, log filters and columns, and their names: each object's latest
//! revision in `tracker_objects`, which the sink fills from the `objects` topic. Events
//! keep ids, so a renamed object's history shows its new name.

use std::collections::HashMap;

use clickhouse::Client;
use traffsure_events::ObjectKind;

use crate::error::ApiError;
use crate::sql::Sql;

/// An object dimension: its name in the API, its id column on clicks, conversions and
/// the funnel rollups, the column of its name in rows and CSV, and its kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ObjectDimension {
    pub name: &'static str,
    pub column: &'static str,
    pub name_column: &'static str,
    pub kind: ObjectKind,
}

/// Every object dimension, in the order the API lists them.
pub const OBJECT_DIMENSIONS: &[ObjectDimension] = &[
    ObjectDimension {
        name: "traffic_source",
        column: "traffic_source_id",
        name_column: "traffic_source_name",
        kind: ObjectKind::TrafficSource,
    },
    ObjectDimension {
        name: "offer",
        column: "offer_id",
        name_column: "offer_name",
        kind: ObjectKind::Offer,
    },
    ObjectDimension {
        name: "lander",
        column: "lander_id",
        name_column: "lander_name",
        kind: ObjectKind::Lander,
    },
    ObjectDimension {
        name: "network",
        column: "network_id",
        name_column: "network_name",
        kind: ObjectKind::AffiliateNetwork,
    },
];

/// The object dimension called `name`.
pub fn object_dimension(name: &str) -> Option<&'static ObjectDimension> {
    OBJECT_DIMENSIONS.iter().find(|d| d.name == name)
}

/// The column that names a grouped dimension's key (`flow_name` beside `flow`,
/// `offer_name` beside `offer`, ...), for those that have one.
pub fn name_column(dim: &str) -> Option<&'static str> {
    if dim == "flow" {
        return Some("flow_name");
    }
    object_dimension(dim).map(|d| d.name_column)
}

/// Appends `[<open>traffic_source_id<close>, ...]`: every object's id column in the order
/// of `OBJECT_DIMENSIONS`, each wrapped (`"argMax("` and `", version)"`, say).
pub fn push_id_array(sql: &mut Sql, open: &'static str, close: &'static str) {
    sql.push("[");
    for (i, d) in OBJECT_DIMENSIONS.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.push(open).push(d.column).push(close);
    }
    sql.push("]");
}

/// Sets each object's id and name in a log item from `ids` (read by `push_id_array`).
pub fn set_ids_and_names(item: &mut serde_json::Value, ids: &[u32], names: &ObjectNames) {
    for (d, id) in OBJECT_DIMENSIONS.iter().zip(ids) {
        item[d.column] = serde_json::json!(id);
        item[d.name_column] = serde_json::json!(names.name(d.kind, *id));
    }
}

/// Names of objects by kind and id, as `tracker_objects` holds them now.
#[derive(Debug, Default)]
pub struct ObjectNames(HashMap<(i32, u32), String>);

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct NameRow {
    kind: u8,
    id: u32,
    name: String,
}

impl ObjectNames {
    /// The latest name of every object (a few thousand at most: one row each).
    pub async fn load(client: &Client) -> Result<Self, ApiError> {
        let rows = client
            .query(&traffsure_clickhouse::queries::sql(
                "object_names",
                "tracker_objects",
            ))
            .fetch_all::<NameRow>()
            .await?;
        Ok(Self(
            rows.into_iter()
                .map(|r| ((i32::from(r.kind), r.id), r.name))
                .collect(),
        ))
    }

    /// The object's name: empty for id 0 (no object), `#<id>` for an id no object of
    /// that kind has (yet).
    pub fn name(&self, kind: ObjectKind, id: u32) -> String {
        if id == 0 {
            return String::new();
        }
        self.0
            .get(&(kind as i32, id))
            .cloned()
            .unwrap_or_else(|| format!("#{id}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_ids_read_as_their_number_and_no_object_as_empty() {
        let mut names = ObjectNames::default();
        names
            .0
            .insert((ObjectKind::Offer as i32, 7), "VPN trial".into());
        assert_eq!(names.name(ObjectKind::Offer, 7), "VPN trial");
        assert_eq!(names.name(ObjectKind::Lander, 7), "#7");
        assert_eq!(names.name(ObjectKind::Offer, 0), "");
        assert_eq!(name_column("flow"), Some("flow_name"));
        assert_eq!(name_column("network"), Some("network_name"));
        assert_eq!(name_column("country"), None);
    }
}
