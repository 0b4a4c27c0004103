//! Conversion status semantics for the `status` parameter of a postback.

use traffsure_events::ConversionStatus;

/// Maps a postback's status text to a conversion status: `pending`, `hold`,
/// `preapproved` → pending; `rejected`, `reject`, `trash`, `cancelled`, `canceled`,
/// `declined`, `chargeback` → rejected; missing or anything else → approved.
pub fn map_status(raw: &str) -> ConversionStatus {
    match raw.trim().to_ascii_lowercase().as_str() {
        "pending" | "hold" | "preapproved" => ConversionStatus::Pending,
        "rejected" | "reject" | "trash" | "cancelled" | "canceled" | "declined" | "chargeback" => {
            ConversionStatus::Rejected
        }
        _ => ConversionStatus::Approved,
    }
}

/// The lowercase word used for a status in the API, the tables and the admin panel.
pub fn status_name(status: ConversionStatus) -> &'static str {
    match status {
        ConversionStatus::Pending => "pending",
        ConversionStatus::Approved => "approved",
        ConversionStatus::Rejected => "rejected",
        ConversionStatus::Unspecified => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_every_documented_word() {
        for raw in ["pending", "hold", "PreApproved", " pending "] {
            assert_eq!(map_status(raw), ConversionStatus::Pending, "{raw}");
        }
        for raw in [
            "rejected",
            "reject",
            "trash",
            "cancelled",
            "declined",
            "Chargeback",
        ] {
            assert_eq!(map_status(raw), ConversionStatus::Rejected, "{raw}");
        }
        for raw in ["", "approved", "1", "sale", "confirmed"] {
            assert_eq!(map_status(raw), ConversionStatus::Approved, "{raw}");
        }
    }
}
