//! URL templates with `{name}` macros.
//!
//! Known macros are replaced with their URL-encoded value; unknown ones are left as
//! written, so a typo shows in the destination instead of vanishing.

use std::borrow::Cow;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Everything but the unreserved characters of RFC 3986 is encoded.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// URL-encodes a value for use inside a query string or path segment.
pub fn encode_component(value: &str) -> Cow<'_, str> {
    utf8_percent_encode(value, COMPONENT).into()
}

/// Replaces each `{name}` in `template` with `lookup(name)`, URL-encoded.
pub fn render<'v, F>(template: &str, mut lookup: F) -> String
where
    F: FnMut(&str) -> Option<Cow<'v, str>>,
{
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let name_len = after
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
            .count();
        if name_len > 0 && after.as_bytes().get(name_len) == Some(&b'}') {
            let name = &after[..name_len];
            match lookup(name) {
                Some(value) => out.push_str(&encode_component(&value)),
                None => {
                    out.push('{');
                    out.push_str(name);
                    out.push('}');
                }
            }
            rest = &after[name_len + 1..];
        } else {
            out.push('{');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// `url` with its query parameter `name` set to `value` (URL-encoded): every existing
/// `name=…` is taken out and `name=value` is added at the end of the query, before any
/// `#fragment`. Names compare as written after percent-decoding.
pub fn set_query_param(url: &str, name: &str, value: &str) -> String {
    let (before_fragment, fragment) = match url.find('#') {
        Some(at) => url.split_at(at),
        None => (url, ""),
    };
    let (base, query) = before_fragment
        .split_once('?')
        .unwrap_or((before_fragment, ""));
    let mut out = String::with_capacity(url.len() + name.len() + value.len() + 8);
    out.push_str(base);
    out.push('?');
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let key = pair.split_once('=').map_or(pair, |(key, _)| key);
        let key = percent_encoding::percent_decode_str(&key.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned();
        if key != name {
            out.push_str(pair);
            out.push('&');
        }
    }
    out.push_str(&encode_component(name));
    out.push('=');
    out.push_str(&encode_component(value));
    out.push_str(fragment);
    out
}

/// The longest start of `text` that is at most `max` bytes and ends on a character
/// boundary.
pub fn truncate_str(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The macro names a template uses, in order of first appearance.
pub fn macro_names(template: &str) -> Vec<String> {
    let mut names = Vec::new();
    render(template, |name| {
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
        None
    });
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<Cow<'static, str>> {
        match name {
            "click" => Some("abc123".into()),
            "sub1" => Some("a b&c=d/é".into()),
            "empty" => Some("".into()),
            _ => None,
        }
    }

    #[test]
    fn replaces_and_encodes() {
        assert_eq!(
            render("https://x.test/o?c={click}&s={sub1}&e={empty}", lookup),
            "https://x.test/o?c=abc123&s=a%20b%26c%3Dd%2F%C3%A9&e="
        );
    }

    #[test]
    fn leaves_unknown_and_malformed_braces() {
        assert_eq!(render("{nope}/{click", lookup), "{nope}/{click");
        assert_eq!(render("{}{{click}}", lookup), "{}{abc123}");
        assert_eq!(render("{ click }", lookup), "{ click }");
        assert_eq!(render("é{click}ü", lookup), "éabc123ü");
    }

    #[test]
    fn lists_macro_names() {
        assert_eq!(macro_names("{a}{b}{a}{ c}"), vec!["a", "b"]);
    }

    #[test]
    fn sets_a_query_parameter_once() {
        let set = |url: &str| set_query_param(url, "aff_sub", "0a b&c");
        assert_eq!(set("https://o.test/"), "https://o.test/?aff_sub=0a%20b%26c");
        assert_eq!(
            set("https://o.test/p?x=1&aff_sub=old&y=2"),
            "https://o.test/p?x=1&y=2&aff_sub=0a%20b%26c"
        );
        assert_eq!(
            set("https://o.test/?aff%5Fsub=old&aff_sub&z#top"),
            "https://o.test/?z&aff_sub=0a%20b%26c#top"
        );
        assert_eq!(
            set("https://o.test/?"),
            "https://o.test/?aff_sub=0a%20b%26c"
        );
        // A parameter whose name only starts the same stays.
        assert_eq!(
            set("https://o.test/?aff_sub2=k"),
            "https://o.test/?aff_sub2=k&aff_sub=0a%20b%26c"
        );
    }

    #[test]
    fn truncates_on_character_boundaries() {
        assert_eq!(truncate_str("abc", 5), "abc");
        assert_eq!(truncate_str("abcdef", 3), "abc");
        assert_eq!(truncate_str("aé", 2), "a");
        assert_eq!(truncate_str("€", 0), "");
    }

    #[test]
    fn never_panics_on_arbitrary_text() {
        // A small deterministic fuzz over tricky bytes: braces, multibyte chars, names.
        let pieces = ["{", "}", "click", "é", "sub1", "_", " ", "€{", "}}", "{{"];
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..5_000 {
            let mut template = String::new();
            for _ in 0..(seed % 12) {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                template.push_str(pieces[(seed >> 33) as usize % pieces.len()]);
            }
            let out = render(&template, lookup);
            assert!(!out.contains("{click}"), "{template:?} -> {out:?}");
        }
    }

    #[test]
    fn values_round_trip_through_encoding() {
        // Property: any value, rendered into a template, comes back unchanged when the
        // URL is decoded, and the rendered URL holds only unreserved characters and
        // percent escapes where the value went.
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        let alphabet: Vec<char> = "aZ09-_.~ &=?#/%+{}é€\u{0}\u{7f}\u{10ffff}"
            .chars()
            .collect();
        for _ in 0..5_000 {
            let len = rng.random_range(0..24);
            let value: String = (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect();
            let out = render("https://x.test/?v={v}&w={w}", |name| {
                (name == "v").then_some(Cow::Borrowed(value.as_str()))
            });
            let encoded = out
                .strip_prefix("https://x.test/?v=")
                .and_then(|rest| rest.strip_suffix("&w={w}"))
                .unwrap_or_else(|| panic!("{value:?} -> {out:?}"));
            assert!(
                encoded
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.~%".contains(&b)),
                "{encoded}"
            );
            let decoded = percent_encoding::percent_decode_str(encoded).decode_utf8();
            assert_eq!(decoded.as_deref().ok(), Some(value.as_str()));
        }
    }

    #[test]
    fn text_without_macros_is_unchanged() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let alphabet: Vec<char> = "ab/?&=%}{ é".chars().collect();
        for _ in 0..2_000 {
            let len = rng.random_range(0..30);
            let text: String = (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect();
            // Every name is unknown: the template must come back exactly as written.
            assert_eq!(render(&text, |_| None), text);
        }
    }
}
