//! Money amounts as integer millionths of a currency unit ("micros"), parsed from
//! decimal text exactly, never through floating point.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MoneyError {
    #[error("is empty")]
    Empty,
    #[error("is not a decimal number")]
    NotANumber,
    #[error("is too large")]
    TooLarge,
}

const SCALE: i64 = 1_000_000;

/// Parses `"12"`, `"12.5"`, `"-0.25"`, `".5"`, `"+3."` into micros. Digits past the sixth
/// decimal are rounded half away from zero.
pub fn parse_micros(text: &str) -> Result<i64, MoneyError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(MoneyError::Empty);
    }
    let (negative, body) = match text.as_bytes()[0] {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (int_part, frac_part) = body.split_once('.').unwrap_or((body, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(MoneyError::NotANumber);
    }
    if !int_part
        .bytes()
        .chain(frac_part.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return Err(MoneyError::NotANumber);
    }
    let mut micros: i64 = 0;
    for b in int_part.bytes() {
        micros = micros
            .checked_mul(10)
            .and_then(|m| m.checked_add(i64::from(b - b'0')))
            .ok_or(MoneyError::TooLarge)?;
    }
    micros = micros.checked_mul(SCALE).ok_or(MoneyError::TooLarge)?;
    let mut place = SCALE / 10;
    let mut frac = frac_part.bytes();
    for b in frac.by_ref().take(6) {
        micros += i64::from(b - b'0') * place;
        place /= 10;
    }
    if frac.next().is_some_and(|b| b >= b'5') {
        micros = micros.checked_add(1).ok_or(MoneyError::TooLarge)?;
    }
    Ok(if negative { -micros } else { micros })
}

/// Formats micros as a plain decimal with trailing zeros removed: `12500000` → `"12.5"`.
pub fn format_micros(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    let int = abs / SCALE as u64;
    let frac = abs % SCALE as u64;
    if frac == 0 {
        return format!("{sign}{int}");
    }
    let frac = format!("{frac:06}");
    format!("{sign}{int}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exactly() {
        for (text, micros) in [
            ("12", 12_000_000),
            ("12.5", 12_500_000),
            ("0.1", 100_000),
            (".5", 500_000),
            ("3.", 3_000_000),
            ("+1.25", 1_250_000),
            ("-0.01", -10_000),
            (" 7.000001 ", 7_000_001),
            ("0.0000005", 1),
            ("0.0000004", 0),
        ] {
            assert_eq!(parse_micros(text), Ok(micros), "{text}");
        }
    }

    #[test]
    fn rejects_what_is_not_a_decimal() {
        for text in [
            "abc", "1,5", "1e3", "--1", ".", "-", "1.2.3", "NaN", "inf", "0x10", "١٢",
        ] {
            assert_eq!(parse_micros(text), Err(MoneyError::NotANumber), "{text}");
        }
        assert_eq!(parse_micros(""), Err(MoneyError::Empty));
        assert_eq!(
            parse_micros("99999999999999999999"),
            Err(MoneyError::TooLarge)
        );
    }

    #[test]
    fn formats_round_trip() {
        for micros in [0, 1, 12_500_000, -10_000, 7_000_001, 1_000_000] {
            assert_eq!(parse_micros(&format_micros(micros)), Ok(micros));
        }
        assert_eq!(format_micros(12_500_000), "12.5");
        assert_eq!(format_micros(-10_000), "-0.01");
    }
}
