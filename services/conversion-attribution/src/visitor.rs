//! The converting click's visitor details and fraud signals (its browser, OS and device as
//! uap-core names them, bot reason, ASN, AS organisation, datacenter and rate flags): what
//! attribution keeps of them with each click and copies onto the conversions it makes, so
//! that reports group and filter conversions by them without a join on the clicks table.
//!
//! A click kept by the state before these were (its record has no `Visitor`) gives a
//! conversion without them, marked so (`visitor_details` false): reports then read its
//! click's values from the clicks table. In memory, each distinct set of details is held
//! once per partition (`Profiles`), and a click names it by number.

use std::collections::HashMap;
use std::sync::Arc;

use prost::Message as _;
use traffsure_events::{Click, Conversion};

/// A click's visitor details and fraud signals (the Click event's fields 21–34).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Visitor {
    /// `traffsure_events::BotReason`'s number.
    #[prost(int32, tag = "1")]
    pub bot_reason: i32,
    #[prost(string, tag = "2")]
    pub browser_family: String,
    #[prost(string, tag = "3")]
    pub browser_major: String,
    #[prost(string, tag = "4")]
    pub browser_minor: String,
    #[prost(string, tag = "5")]
    pub os_family: String,
    #[prost(string, tag = "6")]
    pub os_major: String,
    #[prost(string, tag = "7")]
    pub os_minor: String,
    #[prost(string, tag = "8")]
    pub device_family: String,
    #[prost(string, tag = "9")]
    pub device_brand: String,
    #[prost(string, tag = "10")]
    pub device_model: String,
    #[prost(uint32, tag = "11")]
    pub asn: u32,
    #[prost(string, tag = "12")]
    pub as_org: String,
    #[prost(bool, tag = "13")]
    pub datacenter: bool,
    #[prost(bool, tag = "14")]
    pub rate_exceeded: bool,
}

impl From<&Click> for Visitor {
    fn from(click: &Click) -> Self {
        Self {
            bot_reason: click.bot_reason,
            browser_family: click.browser_family.clone(),
            browser_major: click.browser_major.clone(),
            browser_minor: click.browser_minor.clone(),
            os_family: click.os_family.clone(),
            os_major: click.os_major.clone(),
            os_minor: click.os_minor.clone(),
            device_family: click.device_family.clone(),
            device_brand: click.device_brand.clone(),
            device_model: click.device_model.clone(),
            asn: click.asn,
            as_org: click.as_org.clone(),
            datacenter: click.datacenter,
            rate_exceeded: click.rate_exceeded,
        }
    }
}

/// Copies the click's visitor details onto a new conversion and marks it as carrying
/// them; leaves them empty and unmarked when the state's click predates them (`None`).
pub fn copy_to(visitor: Option<&Visitor>, conversion: &mut Conversion) {
    let Some(v) = visitor else {
        return;
    };
    conversion.bot_reason = v.bot_reason;
    conversion.browser_family.clone_from(&v.browser_family);
    conversion.browser_major.clone_from(&v.browser_major);
    conversion.browser_minor.clone_from(&v.browser_minor);
    conversion.os_family.clone_from(&v.os_family);
    conversion.os_major.clone_from(&v.os_major);
    conversion.os_minor.clone_from(&v.os_minor);
    conversion.device_family.clone_from(&v.device_family);
    conversion.device_brand.clone_from(&v.device_brand);
    conversion.device_model.clone_from(&v.device_model);
    conversion.asn = v.asn;
    conversion.as_org.clone_from(&v.as_org);
    conversion.datacenter = v.datacenter;
    conversion.rate_exceeded = v.rate_exceeded;
    conversion.visitor_details = true;
}

/// Marks a conversion made without its click (`click_missing`): its visitor details are
/// known to be empty, so reports take them as stored rather than from a click that may
/// arrive later.
pub fn mark_missing(conversion: &mut Conversion) {
    conversion.visitor_details = true;
}

/// A later version of a conversion made before visitor details were copied: it takes them
/// from its click when the state has them, as a report would have read them from the
/// clicks table. A conversion that has them, or was made without its click, keeps its own.
pub fn fill_update(visitor: Option<&Visitor>, conversion: &mut Conversion) {
    if !conversion.visitor_details && !conversion.click_missing {
        copy_to(visitor, conversion);
    }
}

/// The distinct visitor details of a partition's clicks, each held once; a click names
/// its details by number, 0 for none (a click recorded before they were kept).
#[derive(Default)]
pub struct Profiles {
    ids: HashMap<Arc<[u8]>, u32>,
    encoded: Vec<Arc<[u8]>>,
}

impl Profiles {
    pub fn intern(&mut self, visitor: Option<&Visitor>) -> u32 {
        let Some(visitor) = visitor else {
            return 0;
        };
        let bytes = visitor.encode_to_vec();
        if let Some(&id) = self.ids.get(bytes.as_slice()) {
            return id;
        }
        let bytes: Arc<[u8]> = Arc::from(bytes);
        self.encoded.push(bytes.clone());
        let id = self.encoded.len() as u32;
        self.ids.insert(bytes, id);
        id
    }

    pub fn get(&self, id: u32) -> Option<Visitor> {
        let bytes = self.encoded.get((id as usize).checked_sub(1)?)?;
        Visitor::decode(&bytes[..]).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visitor() -> Visitor {
        Visitor {
            bot_reason: 0,
            browser_family: "Chrome Mobile".into(),
            browser_major: "126".into(),
            os_family: "Android".into(),
            os_major: "14".into(),
            device_family: "Samsung SM-S918B".into(),
            device_brand: "Samsung".into(),
            device_model: "SM-S918B".into(),
            asn: 3320,
            as_org: "Deutsche Telekom AG".into(),
            ..Visitor::default()
        }
    }

    #[test]
    fn profiles_hold_each_set_once_and_none_as_zero() {
        let mut profiles = Profiles::default();
        assert_eq!(profiles.intern(None), 0);
        let a = profiles.intern(Some(&visitor()));
        let b = profiles.intern(Some(&visitor()));
        let other = Visitor {
            datacenter: true,
            ..visitor()
        };
        let c = profiles.intern(Some(&other));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, 0);
        assert_eq!(profiles.get(a), Some(visitor()));
        assert_eq!(profiles.get(c), Some(other));
        assert_eq!(profiles.get(0), None);
        // Every click with no signal at all still has details (all empty), not none.
        assert_ne!(profiles.intern(Some(&Visitor::default())), 0);
    }

    #[test]
    fn a_conversion_takes_the_details_or_stays_unmarked() {
        let mut conversion = Conversion::default();
        copy_to(None, &mut conversion);
        assert!(!conversion.visitor_details);
        assert!(conversion.browser_family.is_empty());
        copy_to(Some(&visitor()), &mut conversion);
        assert!(conversion.visitor_details);
        assert_eq!(
            (
                conversion.browser_family.as_str(),
                conversion.device_brand.as_str(),
                conversion.asn
            ),
            ("Chrome Mobile", "Samsung", 3320)
        );
    }

    #[test]
    fn an_update_fills_an_old_conversion_but_not_a_click_missing_one() {
        let mut old = Conversion::default();
        fill_update(Some(&visitor()), &mut old);
        assert!(old.visitor_details);
        assert_eq!(old.os_major, "14");

        let mut missing = Conversion {
            click_missing: true,
            ..Conversion::default()
        };
        mark_missing(&mut missing);
        fill_update(Some(&visitor()), &mut missing);
        assert!(missing.visitor_details);
        assert!(missing.os_major.is_empty());

        let mut own = Conversion {
            visitor_details: true,
            os_major: "13".into(),
            ..Conversion::default()
        };
        fill_update(Some(&visitor()), &mut own);
        assert_eq!(own.os_major, "13");
    }
}
