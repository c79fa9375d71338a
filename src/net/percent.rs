//! Percent-encoding for both clients: Kubernetes paths and query strings, IMDS query strings and
//! Entra and registry form bodies.
//!
//! Everything but RFC 3986's unreserved characters is escaped, so one encoding is safe in a path
//! segment, a query and a form body alike. ureq's `query` and `send_form` would write other bytes:
//! they leave `!`, `(`, `)` and `*` (label selectors use them) as they are and `send_form` writes a
//! space as `+`.

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// `text` with every byte outside `A-Z a-z 0-9 - . _ ~` written as `%XX` (upper-case hex).
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    encode_into(text, &mut out);
    out
}

/// `name=value` pairs joined by `&`, both sides encoded: an `application/x-www-form-urlencoded`
/// body or a query string.
pub fn encode_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (i, (name, value)) in pairs.into_iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        encode_into(name, &mut out);
        out.push('=');
        encode_into(value, &mut out);
    }
    out
}

fn encode_into(text: &str, out: &mut String) {
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0F)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unreserved_characters_pass_through() {
        assert_eq!(encode("AZaz09-._~"), "AZaz09-._~");
        assert_eq!(encode("a/b c+d%"), "a%2Fb%20c%2Bd%25");
        assert_eq!(encode("!'()*"), "%21%27%28%29%2A");
        assert_eq!(encode("é\n"), "%C3%A9%0A");
        assert_eq!(encode(""), "");
    }

    #[test]
    fn every_other_byte_is_escaped_in_upper_case_hex() {
        for b in 0..=0x7Fu8 {
            let s = char::from(b).to_string();
            let unreserved = b.is_ascii_alphanumeric() || b"-._~".contains(&b);
            let want = if unreserved {
                s.clone()
            } else {
                format!("%{b:02X}")
            };
            assert_eq!(encode(&s), want, "byte {b:#04x}");
        }
    }

    #[test]
    fn pairs_escape_reserved_characters_on_both_sides() {
        let body = encode_pairs([
            ("scope", "repository:a/b:pull repository:c:pull"),
            ("resource", "https://management.azure.com/"),
        ]);
        assert_eq!(
            body,
            "scope=repository%3Aa%2Fb%3Apull%20repository%3Ac%3Apull&resource=https%3A%2F%2Fmanagement.azure.com%2F"
        );
        assert_eq!(
            encode_pairs([("labelSelector", "env in (a,b),!x"), ("a&b", "=")]),
            "labelSelector=env%20in%20%28a%2Cb%29%2C%21x&a%26b=%3D"
        );
        assert_eq!(encode_pairs([]), "");
    }
}
