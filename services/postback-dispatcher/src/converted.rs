//! The reporting-currency amount behind `{revenue_converted}`: the conversion's revenue
//! at the rate of its day (UTC), read from ClickHouse's `exchange_rates` by the rule of
//! `traffsure_clickhouse::rates`. Each day's rates are kept for a minute, so a rate
//! written meanwhile shows within a minute. Without a rate, or while ClickHouse does not
//! answer, the amount is unknown and the macro is empty: a postback is never held back
//! for a rate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clickhouse::Client;
use traffsure_clickhouse::rates::{utc_day, Rates};
use traffsure_events::Conversion;

use crate::render::Converted;

/// How long one day's rates are used before they are read again.
const FRESH_FOR: Duration = Duration::from_secs(60);

pub struct Converter {
    client: Client,
    reporting: String,
    days: Mutex<HashMap<String, (Instant, Arc<Rates>)>>,
}

impl Converter {
    pub fn new(client: Client, reporting: String) -> Self {
        Self {
            client,
            reporting,
            days: Mutex::new(HashMap::new()),
        }
    }

    pub async fn convert(&self, conversion: &Conversion) -> Converted {
        let converted = |revenue_micros| Converted {
            revenue_micros,
            currency: self.reporting.clone(),
        };
        if conversion.currency == self.reporting {
            return converted(Some(conversion.revenue_micros));
        }
        let day = utc_day(conversion.created_at_ms);
        let Some(rates) = self.rates(&day).await else {
            return converted(None);
        };
        converted(rates.convert(conversion.revenue_micros, &day, &conversion.currency))
    }

    async fn rates(&self, day: &str) -> Option<Arc<Rates>> {
        let cached = self
            .days
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(day)
            .filter(|(at, _)| at.elapsed() < FRESH_FOR)
            .map(|(_, rates)| rates.clone());
        if cached.is_some() {
            return cached;
        }
        match Rates::load(&self.client, &self.reporting, day, day).await {
            Ok(rates) => {
                let rates = Arc::new(rates);
                let mut days = self
                    .days
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                days.retain(|_, (at, _)| at.elapsed() < FRESH_FOR);
                days.insert(day.to_string(), (Instant::now(), rates.clone()));
                Some(rates)
            }
            Err(error) => {
                tracing::warn!(day, error = %error, "exchange rates unavailable");
                None
            }
        }
    }
}
