//! Visitor IDs: 32 hex characters whose first four carry the visitor's routing key, so
//! every click of one visitor (and a visitor-based postback) lands on one partition.

/// A new random visitor ID and the routing key it carries.
pub fn new_visitor() -> (String, u16) {
    let bytes: [u8; 16] = rand::random();
    (
        data_encoding::HEXLOWER.encode(&bytes),
        u16::from_be_bytes([bytes[0], bytes[1]]),
    )
}

/// The routing key a visitor ID carries, or `None` when the text is not a visitor ID.
pub fn routing_key(visitor_id: &str) -> Option<u16> {
    if visitor_id.len() != 32 || !visitor_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u16::from_str_radix(&visitor_id[..4], 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_key_comes_from_the_id() {
        let (vid, _) = new_visitor();
        assert_eq!(vid.len(), 32);
        for _ in 0..100 {
            let (vid, key) = new_visitor();
            assert_eq!(routing_key(&vid), Some(key), "{vid}");
        }
        assert_eq!(routing_key(&vid), u16::from_str_radix(&vid[..4], 16).ok());
        assert_eq!(
            routing_key("beef0000000000000000000000000000"),
            Some(0xBEEF)
        );
        assert_eq!(routing_key("not-a-visitor"), None);
        assert_eq!(routing_key("zzzz0000000000000000000000000000"), None);
    }
}
