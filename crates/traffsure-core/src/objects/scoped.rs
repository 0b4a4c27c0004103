//! Outbound postbacks configured beyond one flow: on a traffic source (every flow buying
//! from it), on an offer (every flow whose paths have it; fired only for conversions of
//! that offer) and globally (every flow). They are kept in their object's spec, checked
//! like a flow's own, and copied into each flow they apply to (`Flow.scoped_postbacks`)
//! with their scope, so the dispatcher needs nothing but the flow. Which of several
//! identical requests fires is decided by [`dedup_firing`].

use serde::{Deserialize, Serialize};
use traffsure_events::{Conversion, Goal, ObjectKind, OutboundPostback};

use super::{ObjectError, ObjectSpec};
use crate::flow::validate::{invalid, is_key};
use crate::flow::{HeaderSpec, OutboundSpec, SECRET_MASK};

/// The id of the one global settings object.
pub const GLOBAL_SETTINGS_ID: u32 = 1;
/// Most outbound postbacks one source, offer or the global settings may have.
pub const MAX_SCOPED_POSTBACKS: usize = 20;

/// Where an outbound postback is configured, from the most specific to the least.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Flow,
    Offer(u32),
    Source(u32),
    Global,
}

impl Scope {
    /// The scope's word in `OutboundPostback.scope`.
    pub fn word(self) -> &'static str {
        match self {
            Self::Flow => "flow",
            Self::Offer(_) => "offer",
            Self::Source(_) => "source",
            Self::Global => "global",
        }
    }

    pub fn id(self) -> u32 {
        match self {
            Self::Offer(id) | Self::Source(id) => id,
            Self::Flow | Self::Global => 0,
        }
    }

    /// The scope of a postback a flow carries. The traffic source's own postback (its
    /// `postback_url`) is source-scoped.
    pub fn of(outbound: &OutboundPostback, flow_source_id: u32) -> Self {
        match outbound.scope.as_str() {
            "offer" => Self::Offer(outbound.scope_id),
            "source" => Self::Source(outbound.scope_id),
            "global" => Self::Global,
            _ if outbound.id.starts_with(crate::flow::SOURCE_POSTBACK_PREFIX) => {
                Self::Source(flow_source_id)
            }
            _ => Self::Flow,
        }
    }

    /// How the outbound log names it: `flow`, `offer:3`, `source:2`, `global`.
    pub fn label(self) -> String {
        match self {
            Self::Offer(id) | Self::Source(id) => format!("{}:{id}", self.word()),
            Self::Flow | Self::Global => self.word().into(),
        }
    }

    /// The prefix of the ids this scope's postbacks carry in a flow (`offer-3.`): a `.` is
    /// never in a flow's own ids, so they cannot clash.
    fn id_prefix(self) -> String {
        match self {
            Self::Offer(id) | Self::Source(id) => format!("{}-{id}.", self.word()),
            Self::Flow => String::new(),
            Self::Global => "global.".into(),
        }
    }
}

/// The tracker's global settings: the outbound postbacks every flow fires.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalSettingsSpec {
    #[serde(default)]
    pub outbound_postbacks: Vec<OutboundSpec>,
}

impl ObjectSpec for GlobalSettingsSpec {
    const KIND: ObjectKind = ObjectKind::GlobalSettings;

    fn name(&self) -> &str {
        "global settings"
    }

    fn checked(&self) -> Result<Self, ObjectError> {
        Ok(Self {
            outbound_postbacks: outbound_specs(&checked_postbacks(
                &self.outbound_postbacks,
                &[],
                true,
            )?),
        })
    }
}

/// Checks the outbound postbacks of a source, an offer or the global settings and returns
/// them normalised, with their ids (`out1`… where none is given). Goals are any goal keys
/// (the flows they apply to have their own); `stored` holds the postbacks saved before,
/// whose secret header values a mask sent back keeps; secret headers are refused unless
/// `secrets` (a source's or offer's view shows its spec as it is).
pub fn checked_postbacks(
    specs: &[OutboundSpec],
    stored: &[OutboundPostback],
    secrets: bool,
) -> Result<Vec<OutboundPostback>, ObjectError> {
    if specs.len() > MAX_SCOPED_POSTBACKS {
        return Err(invalid(
            "outbound_postbacks",
            format!("at most {MAX_SCOPED_POSTBACKS} outbound postbacks"),
        ));
    }
    let mut out: Vec<OutboundPostback> = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let field = |name: &str| format!("outbound_postbacks[{i}].{name}");
        let mut goals = Vec::with_capacity(spec.goals.len());
        for goal in &spec.goals {
            let key = goal.trim().to_ascii_lowercase();
            if !is_key(&key, 64) {
                return Err(invalid(
                    field("goals"),
                    format!("{key:?} is not a goal key (1 to 64 of a-z, 0-9, - and _)"),
                ));
            }
            goals.push(Goal {
                key,
                ..Goal::default()
            });
        }
        if !secrets {
            if let Some(j) = spec.headers.iter().position(|h| h.secret) {
                return Err(invalid(
                    format!("{}[{j}].secret", field("headers")),
                    "secret headers belong on a flow's or a global outbound postback",
                ));
            }
        }
        let id = spec.id.trim();
        let kept = stored.iter().find(|o| !id.is_empty() && o.id == id);
        let postback = spec.to_outbound(i, &goals, kept)?;
        if out.iter().any(|o| o.id == postback.id) {
            return Err(invalid(
                field("id"),
                format!("id {:?} appears twice", postback.id),
            ));
        }
        out.push(postback);
    }
    Ok(out)
}

/// The specs of checked postbacks, as stored (secret values kept).
pub fn outbound_specs(postbacks: &[OutboundPostback]) -> Vec<OutboundSpec> {
    postbacks.iter().map(|o| outbound_spec(o, false)).collect()
}

/// The spec of one outbound postback; `mask` shows secret header values as the mask.
pub fn outbound_spec(o: &OutboundPostback, mask: bool) -> OutboundSpec {
    OutboundSpec {
        id: o.id.clone(),
        url: o.url.clone(),
        method: o.method.clone(),
        body_template: o.body_template.clone(),
        body_format: o.body_format.clone(),
        goals: o.goals.clone(),
        on_status: o.on_status.clone(),
        reasons: o.reasons.clone(),
        headers: o
            .headers
            .iter()
            .map(|h| HeaderSpec {
                name: h.name.clone(),
                value: if mask && h.secret {
                    SECRET_MASK.into()
                } else {
                    h.value.clone()
                },
                secret: h.secret,
            })
            .collect(),
        delay_seconds: o.delay_seconds,
        enabled: o.enabled,
        postback_type: crate::flow::postback_type_word(&o.r#type).into(),
    }
}

/// The stored postbacks of a scope as a flow carries them: ids prefixed (`offer-3.out1`),
/// scope and scope id set. `at` names the owner in errors (`offer 3`).
pub fn scoped(
    at: &str,
    specs: &[OutboundSpec],
    scope: Scope,
) -> Result<Vec<OutboundPostback>, ObjectError> {
    let postbacks = checked_postbacks(specs, &[], true).map_err(|e| ObjectError {
        field: format!("{at}.{}", e.field),
        message: e.message,
    })?;
    let prefix = scope.id_prefix();
    Ok(postbacks
        .into_iter()
        .map(|o| OutboundPostback {
            id: format!("{prefix}{}", o.id),
            scope: scope.word().into(),
            scope_id: scope.id(),
            ..o
        })
        .collect())
}

/// Whether a postback's scope lets it fire for `conversion`: an offer-scoped one only for
/// conversions of its offer.
pub fn scope_matches(outbound: &OutboundPostback, conversion: &Conversion) -> bool {
    outbound.scope != "offer" || conversion.offer_id == outbound.scope_id
}

/// What makes two outbound postbacks the same request to the same receiver: method, URL
/// template, body template and format.
fn request_identity(o: &OutboundPostback) -> (&str, &str, &str, &str) {
    (
        o.method.as_str(),
        o.url.as_str(),
        o.body_template.as_str(),
        o.body_format.as_str(),
    )
}

/// De-duplicates the postbacks that fire for one conversion version: of several that
/// would send the same request (same method, URL template, body template and format), only
/// the most specific scope's fires (flow, then offer, then source, then global; the first
/// listed within one scope), so a receiver configured twice gets the conversion once.
/// Keeps the order of the postbacks that remain.
pub fn dedup_firing<'f>(
    firing: Vec<&'f OutboundPostback>,
    flow_source_id: u32,
) -> Vec<&'f OutboundPostback> {
    let mut kept: Vec<(&'f OutboundPostback, Scope)> = Vec::with_capacity(firing.len());
    for outbound in firing {
        let scope = Scope::of(outbound, flow_source_id);
        match kept
            .iter_mut()
            .find(|(k, _)| request_identity(k) == request_identity(outbound))
        {
            Some(existing) if scope < existing.1 => *existing = (outbound, scope),
            Some(_) => {}
            None => kept.push((outbound, scope)),
        }
    }
    kept.into_iter().map(|(o, _)| o).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn specs(json: serde_json::Value) -> Vec<OutboundSpec> {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn checks_and_prefixes_scoped_postbacks() {
        let offer = scoped(
            "offer 3",
            &specs(serde_json::json!([
                {"url": "https://r.test/?c={click}", "goals": ["Sale"]},
                {"id": "crm", "url": "https://crm.test/", "method": "post", "body_template": "{\"c\": \"{click}\"}", "body_format": "json"}
            ])),
            Scope::Offer(3),
        )
        .unwrap();
        assert_eq!(
            offer
                .iter()
                .map(|o| (o.id.as_str(), o.scope.as_str(), o.scope_id))
                .collect::<Vec<_>>(),
            [("offer-3.out1", "offer", 3), ("offer-3.crm", "offer", 3)]
        );
        assert_eq!(offer[0].goals, ["sale"]);
        assert_eq!(offer[1].method, "POST");
        let err = scoped(
            "offer 3",
            &specs(serde_json::json!([{"url": "https://r.test/?x={bogus}"}])),
            Scope::Offer(3),
        )
        .unwrap_err();
        assert_eq!(err.field, "offer 3.outbound_postbacks[0].url");
        let err = checked_postbacks(
            &specs(serde_json::json!([{"url": "https://r.test/", "goals": ["no way"]}])),
            &[],
            false,
        )
        .unwrap_err();
        assert_eq!(err.field, "outbound_postbacks[0].goals");
        let err = checked_postbacks(
            &specs(serde_json::json!([{"url": "https://r.test/", "headers": [{"name": "Authorization", "value": "k", "secret": true}]}])),
            &[],
            false,
        )
        .unwrap_err();
        assert_eq!(err.field, "outbound_postbacks[0].headers[0].secret");
        let err = checked_postbacks(
            &specs(serde_json::json!([{"id": "a", "url": "https://r.test/"}, {"id": "a", "url": "https://s.test/"}])),
            &[],
            true,
        )
        .unwrap_err();
        assert_eq!(err.field, "outbound_postbacks[1].id");
    }

    #[test]
    fn a_mask_keeps_the_stored_secret() {
        let first = checked_postbacks(
            &specs(serde_json::json!([{"id": "crm", "url": "https://crm.test/", "headers": [{"name": "Authorization", "value": "Bearer k", "secret": true}]}])),
            &[],
            true,
        )
        .unwrap();
        let shown = outbound_spec(&first[0], true);
        assert_eq!(shown.headers[0].value, SECRET_MASK);
        let again = checked_postbacks(&[shown], &first, true).unwrap();
        assert_eq!(again[0].headers[0].value, "Bearer k");
    }

    fn outbound(id: &str, url: &str, scope: Scope) -> OutboundPostback {
        OutboundPostback {
            id: id.into(),
            url: url.into(),
            method: "GET".into(),
            body_format: "form".into(),
            scope: if scope == Scope::Flow {
                String::new()
            } else {
                scope.word().into()
            },
            scope_id: scope.id(),
            ..OutboundPostback::default()
        }
    }

    #[test]
    fn the_most_specific_of_identical_requests_fires_once() {
        let global = outbound("global.a", "https://r.test/?c={click}", Scope::Global);
        let source = outbound("source-2", "https://r.test/?c={click}", Scope::Flow);
        let own = outbound("out1", "https://r.test/?c={click}", Scope::Flow);
        let offer = outbound("offer-3.a", "https://r.test/?c={click}", Scope::Offer(3));
        let other = outbound("global.b", "https://other.test/?c={click}", Scope::Global);
        let kept = dedup_firing(vec![&global, &other, &source, &offer, &own], 2);
        assert_eq!(
            kept.iter().map(|o| o.id.as_str()).collect::<Vec<_>>(),
            ["out1", "global.b"]
        );
        let kept = dedup_firing(vec![&global, &source], 2);
        assert_eq!(kept[0].id, "source-2");
        assert_eq!(Scope::of(&source, 2).label(), "source:2");
        assert_eq!(Scope::of(&offer, 2).label(), "offer:3");
        let conversion = |offer_id| Conversion {
            offer_id,
            ..Conversion::default()
        };
        assert!(scope_matches(&offer, &conversion(3)));
        assert!(!scope_matches(&offer, &conversion(4)));
        assert!(scope_matches(&global, &conversion(0)));
    }
}
