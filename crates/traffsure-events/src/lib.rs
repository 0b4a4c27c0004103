//! The event model shared by every service: Protobuf messages generated from `proto/`.
//!
//! Each Kafka topic carries one of these messages; this crate only defines them and
//! leaves topic names and partitioning to `traffsure-kafka`.

pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/traffsure.events.v1.rs"));
}

pub use v1::*;

/// The first bytes of a `ClickBatch` record: field 100, length-delimited. A click's
/// record starts with its click hash, field 1 (0x0A).
pub const CLICK_BATCH_TAG: [u8; 2] = [0xA2, 0x06];

/// Whether a record of the clicks topic holds a `ClickBatch` rather than one `Click`.
pub fn is_click_batch(payload: &[u8]) -> bool {
    payload.starts_with(&CLICK_BATCH_TAG)
}

/// Adds one encoded click to a `ClickBatch` being encoded in `batch`: the record is the
/// concatenation of these.
pub fn push_batched_click(batch: &mut Vec<u8>, click: &[u8]) {
    batch.extend_from_slice(&CLICK_BATCH_TAG);
    prost::encoding::encode_varint(click.len() as u64, batch);
    batch.extend_from_slice(click);
}

/// The encoded clicks of a record of the clicks topic, in order, without decoding them:
/// the record itself when it holds one click, each click of a `ClickBatch` otherwise.
pub fn click_payloads(payload: &[u8]) -> Result<Vec<&[u8]>, prost::DecodeError> {
    if !is_click_batch(payload) {
        return Ok(vec![payload]);
    }
    let mut clicks = Vec::new();
    let mut rest = payload;
    while !rest.is_empty() {
        let (tag, wire_type) = prost::encoding::decode_key(&mut rest)?;
        if tag != 100 || wire_type != prost::encoding::WireType::LengthDelimited {
            prost::encoding::skip_field(
                wire_type,
                tag,
                &mut rest,
                prost::encoding::DecodeContext::default(),
            )?;
            continue;
        }
        let len = prost::encoding::decode_varint(&mut rest)?;
        let Some(len) = usize::try_from(len).ok().filter(|len| *len <= rest.len()) else {
            // prost's own words for it ("buffer underflow") need its private constructor.
            #[allow(deprecated)]
            return Err(prost::DecodeError::new(
                "a batched click runs past the record",
            ));
        };
        let (click, after) = rest.split_at(len);
        clicks.push(click);
        rest = after;
    }
    Ok(clicks)
}

/// The clicks of a record of the clicks topic, in order: one, or a `ClickBatch`'s.
pub fn clicks_of(payload: &[u8]) -> Result<Vec<Click>, prost::DecodeError> {
    click_payloads(payload)?
        .into_iter()
        .map(<Click as prost::Message>::decode)
        .collect()
}

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
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use prost::Message as _;

    fn click(hash: &str) -> Click {
        Click {
            click_hash: hash.into(),
            flow_id: 7,
            ..Click::default()
        }
    }

    #[test]
    fn a_record_of_one_click_reads_as_that_click() {
        let one = click("a").encode_to_vec();
        assert!(!is_click_batch(&one));
        assert_eq!(clicks_of(&one).unwrap(), vec![click("a")]);
        assert_eq!(click_payloads(&one).unwrap(), vec![one.as_slice()]);
    }

    #[test]
    fn a_batch_reads_as_its_clicks_in_order_and_as_the_message() {
        let mut record = Vec::new();
        let long = Click {
            user_agent: "x".repeat(300), // a length of two varint bytes
            ..click("b")
        };
        for c in [click("a"), long.clone(), click("c")] {
            push_batched_click(&mut record, &c.encode_to_vec());
        }
        assert!(is_click_batch(&record));
        let expected = vec![click("a"), long, click("c")];
        assert_eq!(clicks_of(&record).unwrap(), expected);
        let message = ClickBatch::decode(record.as_slice()).unwrap();
        assert_eq!(message.clicks, expected);
        assert_eq!(message.encode_to_vec(), record, "the same bytes as prost's");
    }

    #[test]
    fn a_cut_batch_is_an_error_not_a_shorter_batch() {
        let mut record = Vec::new();
        push_batched_click(&mut record, &click("a").encode_to_vec());
        push_batched_click(&mut record, &click("b").encode_to_vec());
        record.pop();
        assert!(clicks_of(&record).is_err());
        assert!(click_payloads(&record).is_err());
    }

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
