//! The tracker's words for its enums, each list in one place: the API, the tables, the
//! admin panel, the dispatcher and replay all name a flow status, a redirect mode, a
//! duplicate policy, a conversion status, an outbound state, a postback outcome or a
//! bot reason with the word listed here, and parse it back with the same list.
//!
//! The enums themselves are the Protobuf ones of `traffsure-events`; their
//! `UNSPECIFIED` value (what an older event carries) reads as the word of the value it is
//! treated as, so no event ever shows an empty word.

use traffsure_events::{
    BotReason, ConversionStatus, DuplicatePolicy, FlowStatus, OutboundState, PostbackOutcome,
    RedirectMode,
};

/// How an outbound postback reaches its receiver (`OutboundAttempt.integration`): a
/// server-to-server request or a pixel. The first is what an attempt logged without one
/// (before the column existed) was.
pub const OUTBOUND_INTEGRATIONS: &[&str] = &["s2s", "pixel"];
/// What fires an outbound postback (`OutboundAttempt.postback_type`). The first is what an
/// attempt logged without one was.
pub const OUTBOUND_POSTBACK_TYPES: &[&str] = &["conversion", "click", "impression", "event"];

/// An enum with one word per value.
pub trait Vocabulary: Copy + Eq + Sized + 'static {
    /// Every value a user can name, with its word, in display order.
    const WORDS: &'static [(Self, &'static str)];
    /// The value `UNSPECIFIED` is treated as.
    const UNSPECIFIED_AS: Self;
    /// The protobuf `UNSPECIFIED` value.
    const UNSPECIFIED: Self;

    /// The word of a value (`UNSPECIFIED` reads as `UNSPECIFIED_AS`).
    fn word(self) -> &'static str {
        let value = if self == Self::UNSPECIFIED {
            Self::UNSPECIFIED_AS
        } else {
            self
        };
        Self::WORDS
            .iter()
            .find(|(v, _)| *v == value)
            .map(|(_, word)| *word)
            .unwrap_or("")
    }

    /// The word of a value, or `None` for `UNSPECIFIED`: where "not set" must stay
    /// distinguishable (a first conversion version's previous status, a conversion that
    /// fires no outbound postback).
    fn specified_word(self) -> Option<&'static str> {
        (self != Self::UNSPECIFIED).then(|| self.word())
    }

    /// The value a word names, exactly as listed (lowercase).
    fn from_word(word: &str) -> Option<Self> {
        Self::WORDS
            .iter()
            .find(|(_, w)| *w == word)
            .map(|(v, _)| *v)
    }

    /// Every word, in display order.
    fn words() -> Vec<&'static str> {
        Self::WORDS.iter().map(|(_, word)| *word).collect()
    }

    /// The words joined for an error message: `a, b or c`.
    fn word_list() -> String {
        let words = Self::words();
        match words.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            Some((last, _)) => (*last).to_string(),
            None => String::new(),
        }
    }
}

impl Vocabulary for FlowStatus {
    const WORDS: &'static [(Self, &'static str)] = &[
        (FlowStatus::Active, "active"),
        (FlowStatus::Paused, "paused"),
        (FlowStatus::Archived, "archived"),
    ];
    const UNSPECIFIED_AS: Self = FlowStatus::Active;
    const UNSPECIFIED: Self = FlowStatus::Unspecified;
}

impl Vocabulary for RedirectMode {
    const WORDS: &'static [(Self, &'static str)] = &[
        (RedirectMode::Found302, "302"),
        (RedirectMode::Temporary307, "307"),
        (RedirectMode::MetaRefresh, "meta_refresh"),
        (RedirectMode::DoubleMetaRefresh, "double_meta_refresh"),
    ];
    const UNSPECIFIED_AS: Self = RedirectMode::Found302;
    const UNSPECIFIED: Self = RedirectMode::Unspecified;
}

impl Vocabulary for DuplicatePolicy {
    const WORDS: &'static [(Self, &'static str)] = &[
        (DuplicatePolicy::Once, "once"),
        (DuplicatePolicy::PerUid, "per_uid"),
        (DuplicatePolicy::Every, "every"),
    ];
    const UNSPECIFIED_AS: Self = DuplicatePolicy::PerUid;
    const UNSPECIFIED: Self = DuplicatePolicy::Unspecified;
}

impl Vocabulary for ConversionStatus {
    const WORDS: &'static [(Self, &'static str)] = &[
        (ConversionStatus::Approved, "approved"),
        (ConversionStatus::Pending, "pending"),
        (ConversionStatus::Rejected, "rejected"),
    ];
    // A postback without a status is a sale (see `status::map_status`).
    const UNSPECIFIED_AS: Self = ConversionStatus::Approved;
    const UNSPECIFIED: Self = ConversionStatus::Unspecified;
}

impl Vocabulary for OutboundState {
    const WORDS: &'static [(Self, &'static str)] = &[
        // Recorded and waiting for its first attempt.
        (OutboundState::Unspecified, "scheduled"),
        (OutboundState::Delivered, "delivered"),
        (OutboundState::Retrying, "retrying"),
        (OutboundState::Dead, "dead"),
        (OutboundState::Refused, "refused"),
    ];
    const UNSPECIFIED_AS: Self = OutboundState::Unspecified;
    const UNSPECIFIED: Self = OutboundState::Unspecified;
}

impl Vocabulary for PostbackOutcome {
    const WORDS: &'static [(Self, &'static str)] = &[
        (PostbackOutcome::Converted, "converted"),
        (PostbackOutcome::Updated, "updated"),
        (PostbackOutcome::Duplicate, "duplicate"),
        (PostbackOutcome::Expired, "expired"),
        (PostbackOutcome::ClickNotFound, "click_not_found"),
        (PostbackOutcome::ClickMissing, "click_missing"),
    ];
    const UNSPECIFIED_AS: Self = PostbackOutcome::Converted;
    const UNSPECIFIED: Self = PostbackOutcome::Unspecified;
}

/// Why a click is a bot. `UNSPECIFIED` (not a bot) has no word: the column stays empty.
impl Vocabulary for BotReason {
    const WORDS: &'static [(Self, &'static str)] = &[
        (BotReason::Crawler, "crawler"),
        (BotReason::Headless, "headless"),
        (BotReason::Datacenter, "datacenter"),
        (BotReason::Rate, "rate"),
        (BotReason::IpList, "ip_list"),
        (BotReason::UaList, "ua_list"),
        (BotReason::EmptyUa, "empty_ua"),
    ];
    // Not a bot (or a bot recorded before reasons were): no word, an empty column.
    const UNSPECIFIED_AS: Self = BotReason::Unspecified;
    const UNSPECIFIED: Self = BotReason::Unspecified;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trips<V: Vocabulary + std::fmt::Debug>() {
        for &(value, word) in V::WORDS {
            assert_eq!(value.word(), word);
            assert_eq!(V::from_word(word), Some(value), "{word}");
            assert!(!word.is_empty());
        }
        assert!(!V::UNSPECIFIED.word().is_empty());
        assert_eq!(V::from_word("nonsense"), None);
    }

    #[test]
    fn every_word_names_its_value_and_back() {
        round_trips::<FlowStatus>();
        round_trips::<RedirectMode>();
        round_trips::<DuplicatePolicy>();
        round_trips::<ConversionStatus>();
        round_trips::<OutboundState>();
        round_trips::<PostbackOutcome>();
        for &(value, word) in BotReason::WORDS {
            assert_eq!(BotReason::from_word(word), Some(value));
        }
        assert_eq!(BotReason::Unspecified.word(), "");
        assert_eq!(BotReason::words().len(), 7);
    }

    #[test]
    fn bot_reasons_have_seven_words_and_none_for_people() {
        for &(value, word) in BotReason::WORDS {
            assert_eq!(BotReason::from_word(word), Some(value), "{word}");
        }
        assert_eq!(
            BotReason::words(),
            [
                "crawler",
                "headless",
                "datacenter",
                "rate",
                "ip_list",
                "ua_list",
                "empty_ua"
            ]
        );
        assert_eq!(BotReason::Unspecified.word(), "");
        assert_eq!(BotReason::Unspecified.specified_word(), None);
    }

    #[test]
    fn unspecified_reads_as_the_value_it_is_treated_as() {
        assert_eq!(FlowStatus::Unspecified.word(), "active");
        assert_eq!(RedirectMode::Unspecified.word(), "302");
        assert_eq!(DuplicatePolicy::Unspecified.word(), "per_uid");
        assert_eq!(ConversionStatus::Unspecified.word(), "approved");
        assert_eq!(OutboundState::Unspecified.word(), "scheduled");
        assert_eq!(ConversionStatus::Unspecified.specified_word(), None);
        assert_eq!(ConversionStatus::Pending.specified_word(), Some("pending"));
    }

    #[test]
    fn word_lists_read_as_prose() {
        assert_eq!(DuplicatePolicy::word_list(), "once, per_uid or every");
        assert_eq!(
            OutboundState::words(),
            ["scheduled", "delivered", "retrying", "dead", "refused"]
        );
    }
}
