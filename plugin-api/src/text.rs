//! Small text helpers a handler needs without pulling in a crate: percent-decoding of query
//! parameters (`+` as space, as HTML forms send them), and writing JSON strings and objects.
//! Plain Rust on the plugin's side of the boundary: nothing here crosses the ABI.

use std::fmt::Write as _;

/// Percent-decodes `text` as a query component (`%41` is `A`, `+` is a space); `None` when the
/// bytes it decodes to are not UTF-8. A `%` not followed by two hex digits is kept as it is.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(at + 1..at + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        at += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        at += 1;
    }
    String::from_utf8(out).ok()
}

/// `text` as a JSON string literal, quotes included (RFC 8259: `"` and `\` escaped, control
/// characters as `\n`, `\t`, ... or `\u00XX`).
pub fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    push_json_string(&mut out, text);
    out
}

fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Writes one JSON object, field by field, without a serializer:
///
/// ```
/// let json = plugin_api::JsonObject::new()
///     .string("label", "positive")
///     .number("score", 2.5)
///     .raw("matched", "[\"good\"]")
///     .finish();
/// assert_eq!(json, r#"{"label":"positive","score":2.5,"matched":["good"]}"#);
/// ```
#[derive(Debug, Default)]
pub struct JsonObject {
    out: String,
}

impl JsonObject {
    /// An empty object.
    pub fn new() -> JsonObject {
        JsonObject {
            out: String::from("{"),
        }
    }

    fn key(&mut self, name: &str) {
        if self.out.len() > 1 {
            self.out.push(',');
        }
        push_json_string(&mut self.out, name);
        self.out.push(':');
    }

    /// A string field (escaped).
    pub fn string(mut self, name: &str, value: &str) -> JsonObject {
        self.key(name);
        push_json_string(&mut self.out, value);
        self
    }

    /// A number field; a value that is not finite (JSON has no NaN) is written as `null`.
    pub fn number(mut self, name: &str, value: f64) -> JsonObject {
        self.key(name);
        match value.is_finite() {
            true => {
                let _ = write!(self.out, "{value}");
            }
            false => self.out.push_str("null"),
        }
        self
    }

    /// A boolean field.
    pub fn bool(mut self, name: &str, value: bool) -> JsonObject {
        self.key(name);
        self.out.push_str(if value { "true" } else { "false" });
        self
    }

    /// A field whose value is JSON already (an array or object you wrote); not checked.
    pub fn raw(mut self, name: &str, json: &str) -> JsonObject {
        self.key(name);
        self.out.push_str(json);
        self
    }

    /// The object's text.
    pub fn finish(mut self) -> String {
        self.out.push('}');
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_components_are_decoded() {
        assert_eq!(percent_decode("a%20b+c").as_deref(), Some("a b c"));
        assert_eq!(percent_decode("%C3%A9t%C3%A9").as_deref(), Some("été"));
        assert_eq!(percent_decode("100%").as_deref(), Some("100%"));
        assert_eq!(percent_decode("%zz").as_deref(), Some("%zz"));
        assert_eq!(percent_decode("%FF"), None, "not UTF-8");
    }

    #[test]
    fn json_strings_and_objects_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n\u{1}"), r#""a\"b\\c\n\u0001""#);
        let json = JsonObject::new()
            .string("k\"", "v")
            .number("n", f64::NAN)
            .bool("ok", true)
            .finish();
        assert_eq!(json, r#"{"k\"":"v","n":null,"ok":true}"#);
        assert_eq!(JsonObject::new().finish(), "{}");
    }
}
