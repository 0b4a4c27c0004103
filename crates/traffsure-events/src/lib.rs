//! The event model shared by every service: Protobuf messages generated from `proto/`.
//!
//! Each Kafka topic carries one of these messages; this crate only defines them and
//! leaves topic names and partitioning to `traffsure-kafka`.

pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/traffsure.events.v1.rs"));
}

pub use v1::*;

/// Gives back what decoding left unused: a repeated field decoded one element at a time
/// holds room for up to twice its elements (at least four). Services that keep every
/// flow in memory (10,000 flows are common) call it on each flow they store.
pub trait ShrinkToFit {
    fn shrink_to_fit(&mut self);
}

impl<T: ShrinkToFit> ShrinkToFit for Vec<T> {
    fn shrink_to_fit(&mut self) {
        self.iter_mut().for_each(ShrinkToFit::shrink_to_fit);
        Vec::shrink_to_fit(self);
    }
}

impl<T: ShrinkToFit> ShrinkToFit for Option<T> {
    fn shrink_to_fit(&mut self) {
        if let Some(inner) = self {
            inner.shrink_to_fit();
        }
    }
}

impl<T: ShrinkToFit> ShrinkToFit for Box<T> {
    fn shrink_to_fit(&mut self) {
        T::shrink_to_fit(self);
    }
}

impl ShrinkToFit for String {
    fn shrink_to_fit(&mut self) {
        String::shrink_to_fit(self);
    }
}

/// Messages whose fields are all scalars or strings.
macro_rules! shrink_nothing {
    ($($message:ty),*) => {
        $(impl ShrinkToFit for $message {
            fn shrink_to_fit(&mut self) {}
        })*
    };
}
shrink_nothing!(
    Goal,
    Cap,
    Destination,
    OutboundHeader,
    CostModel,
    PathLander
);

/// Messages with repeated or nested fields: each of them shrunk.
macro_rules! shrink_fields {
    ($($message:ty => [$($field:ident),*]),* $(,)?) => {
        $(impl ShrinkToFit for $message {
            fn shrink_to_fit(&mut self) {
                $(ShrinkToFit::shrink_to_fit(&mut self.$field);)*
            }
        })*
    };
}
shrink_fields!(
    Condition => [values],
    ConditionGroup => [conditions],
    Rule => [conditions, destinations, any_of, path],
    Path => [landers, offers],
    PathOffer => [goals, caps],
    PostbackSecurity => [allowed_ips],
    OutboundPostback => [goals, reasons, headers],
    Flow => [
        goals,
        destinations,
        rules,
        postback_security,
        outbound_postbacks,
        path,
        traffic_source_postback,
        scoped_postbacks,
        caps,
        cost_model,
        own_cost_model
    ],
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrinking_keeps_the_flow_and_frees_the_room_decoding_left() {
        let condition = Condition {
            values: vec!["DE".into()],
            ..Condition::default()
        };
        let rule = Rule {
            conditions: vec![condition.clone(), condition],
            ..Rule::default()
        };
        let flow = Flow {
            id: 7,
            rules: vec![rule.clone(), rule],
            ..Flow::default()
        };
        let mut decoded =
            <Flow as prost::Message>::decode(prost::Message::encode_to_vec(&flow).as_slice())
                .unwrap_or_default();
        assert!(decoded.rules.capacity() > 2, "decoding grows one by one");
        decoded.shrink_to_fit();
        assert_eq!(decoded, flow);
        assert_eq!(decoded.rules.capacity(), 2);
        assert_eq!(decoded.rules[0].conditions.capacity(), 2);
        assert_eq!(decoded.rules[0].conditions[0].values.capacity(), 1);
    }
}
