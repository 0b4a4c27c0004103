//! Conversion status semantics for the `status` parameter of a postback: the default
//! map, and a flow's own map (Keitaro's `sale_status=` idea) that overrides it.

use std::collections::BTreeMap;

use traffsure_events::ConversionStatus;

use crate::vocab::Vocabulary;

/// Maps a postback's status text to a conversion status: `pending`, `hold`,
/// `preapproved`, `new` → pending; `rejected`, `reject`, `trash`, `cancelled`,
/// `canceled`, `declined`, `decline`, `chargeback`, `scrubbed` → rejected; missing or
/// anything else → approved. Only words that mean the same to every documented dialect
/// are here (BeMob's `new` and `decline`, CAKE's `scrubbed`); numeric codes and words
/// vendors disagree on (Affise `2`, Keitaro `lead`) belong in a flow's `status_map`.
pub fn map_status(raw: &str) -> ConversionStatus {
    match raw.trim().to_ascii_lowercase().as_str() {
        "pending" | "hold" | "preapproved" | "new" => ConversionStatus::Pending,
        "rejected" | "reject" | "trash" | "cancelled" | "canceled" | "declined" | "decline"
        | "chargeback" | "scrubbed" => ConversionStatus::Rejected,
        _ => ConversionStatus::Approved,
    }
}

/// Maps a postback's status text with a flow's `status_map` first (keys are lowercase raw
/// statuses, values `approved`, `pending` or `rejected`), then the default map. An
/// override naming no known status is ignored, so a stored flow can never produce an
/// unspecified status.
pub fn map_status_with(raw: &str, overrides: &BTreeMap<String, String>) -> ConversionStatus {
    if !overrides.is_empty() {
        let key = raw.trim().to_ascii_lowercase();
        let named = |name: &String| ConversionStatus::from_word(&name.trim().to_ascii_lowercase());
        if let Some(status) = overrides.get(&key).and_then(named) {
            return status;
        }
    }
    map_status(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_every_documented_word() {
        for raw in ["pending", "hold", "PreApproved", " pending ", "New"] {
            assert_eq!(map_status(raw), ConversionStatus::Pending, "{raw}");
        }
        for raw in [
            "rejected",
            "reject",
            "trash",
            "cancelled",
            "declined",
            "decline",
            "Chargeback",
            "scrubbed",
        ] {
            assert_eq!(map_status(raw), ConversionStatus::Rejected, "{raw}");
        }
        // Numeric codes and `lead` mean different things to different vendors: only a
        // flow's status map reads them.
        for raw in [
            "",
            "approved",
            "1",
            "2",
            "3",
            "5",
            "lead",
            "sale",
            "confirmed",
        ] {
            assert_eq!(map_status(raw), ConversionStatus::Approved, "{raw}");
        }
    }

    #[test]
    fn flow_map_overrides_the_default_and_falls_back_to_it() {
        let overrides: BTreeMap<String, String> = [
            ("sale", "approved"),
            ("hold", "approved"),
            ("2", "rejected"),
            ("0", "pending"),
            ("odd", "nonsense"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            map_status_with("HOLD", &overrides),
            ConversionStatus::Approved
        );
        assert_eq!(
            map_status_with(" 2 ", &overrides),
            ConversionStatus::Rejected
        );
        assert_eq!(map_status_with("0", &overrides), ConversionStatus::Pending);
        // Not in the flow's map: the default applies.
        assert_eq!(
            map_status_with("trash", &overrides),
            ConversionStatus::Rejected
        );
        assert_eq!(map_status_with("", &overrides), ConversionStatus::Approved);
        // An override naming no status is ignored rather than producing an unknown one.
        assert_eq!(
            map_status_with("odd", &overrides),
            ConversionStatus::Approved
        );
        assert_eq!(
            map_status_with("pending", &BTreeMap::new()),
            ConversionStatus::Pending
        );
    }
}
