//! Keeping parameter values out of error messages, and so out of logs: an
//! engine's message may quote a value it was given (MySQL's `Duplicate entry
//! '...'`, DuckDB's `Could not convert string '...'`), and iadb's own
//! messages name a parameter by its position and kind instead.

use crate::{Error, Value};

/// Texts shorter than this are not looked for: they would match ordinary
/// words of a message, and say little about the value.
pub const MIN_SCRUBBED_BYTES: usize = 4;

/// Texts longer than this are not looked for whole, only their first
/// [`PREFIX_BYTES`]: an engine cuts a long value short when it quotes one,
/// and a streamed call would keep a copy of the whole text until its last
/// row.
pub const MAX_SCRUBBED_BYTES: usize = 4096;

/// How much of a long text is looked for on its own, for a message that
/// quotes the value cut short.
pub const PREFIX_BYTES: usize = 32;

/// The texts of a call's parameters that a message might quote, each with
/// what to say in its place (`<parameter 2 (text)>`).
#[derive(Debug, Clone, Default)]
pub struct ValueScrubber {
    /// (value's text, replacement), longest text first.
    values: Vec<(String, String)>,
}

impl ValueScrubber {
    /// For one statement's parameters.
    pub fn new(params: &[Value]) -> Self {
        Self::for_sets(std::iter::once(params))
    }

    /// For several parameter sets of one statement (or one batch); a
    /// position is counted within its set.
    pub fn for_sets<'a>(sets: impl IntoIterator<Item = &'a [Value]>) -> Self {
        let mut values = Vec::new();
        for set in sets {
            for (i, value) in set.iter().enumerate() {
                let text = match value {
                    Value::Text(s) | Value::Decimal(s) | Value::Json(s) => s.as_str(),
                    Value::Bytes(b) => match std::str::from_utf8(b) {
                        Ok(s) => s,
                        Err(_) => continue,
                    },
                    _ => continue,
                };
                if text.len() < MIN_SCRUBBED_BYTES {
                    continue;
                }
                // Only the first bytes of a very long text (see PREFIX_BYTES).
                let text = if text.len() > MAX_SCRUBBED_BYTES {
                    let mut end = PREFIX_BYTES;
                    while !text.is_char_boundary(end) {
                        end -= 1;
                    }
                    &text[..end]
                } else {
                    text
                };
                let replacement = format!("<parameter {} ({})>", i + 1, value.kind_name());
                // An engine may quote a long value cut short: its first
                // bytes are looked for too (after the whole text).
                if text.len() > PREFIX_BYTES {
                    let mut end = PREFIX_BYTES;
                    while !text.is_char_boundary(end) {
                        end -= 1;
                    }
                    values.push((text[..end].to_owned(), replacement.clone()));
                }
                values.push((text.to_owned(), replacement));
            }
        }
        values.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        values.dedup_by(|a, b| a.0 == b.0);
        Self { values }
    }

    /// Whether there is nothing to look for.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `message` with every value's text replaced, if any was in it.
    pub fn scrub_text(&self, message: &str) -> Option<String> {
        let mut out: Option<String> = None;
        for (text, replacement) in &self.values {
            let current = out.as_deref().unwrap_or(message);
            if current.contains(text.as_str()) {
                out = Some(current.replace(text.as_str(), replacement));
            }
        }
        out
    }

    /// `error` with the values hidden from its message; when one was found,
    /// the engine's own error (the source, which quotes it too) is dropped.
    pub fn scrub(&self, error: Error) -> Error {
        if self.values.is_empty() {
            return error;
        }
        match self.scrub_text(error.message()) {
            Some(message) => error.with_message_only(message),
            None => error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn values_are_replaced_by_their_position_and_kind() {
        let scrubber = ValueScrubber::new(&[
            Value::Int(1062),
            Value::Text("abc".into()),
            Value::Text("secret-42".into()),
            Value::Decimal("12345.6".into()),
        ]);
        let error = Error::new(
            ErrorKind::AlreadyExists,
            "Duplicate entry 'secret-42' for key 'PRIMARY' (12345.6, abc, 1062)",
        )
        .with_code("23000");
        let scrubbed = scrubber.scrub(error);
        assert_eq!(
            scrubbed.message(),
            "Duplicate entry '<parameter 3 (text)>' for key 'PRIMARY' (<parameter 4 (decimal)>, abc, 1062)"
        );
        assert_eq!(scrubbed.kind(), ErrorKind::AlreadyExists);
        assert_eq!(scrubbed.code(), Some("23000"));
        assert!(ValueScrubber::new(&[Value::Text("ab".into())]).is_empty());
        // A long value quoted cut short.
        let long = "Zq".repeat(5000);
        let scrubber = ValueScrubber::new(&[Value::Text(long.clone())]);
        let quoted = format!("Duplicate entry '{}' for key", &long[..64]);
        let scrubbed = scrubber.scrub_text(&quoted).unwrap_or_default();
        assert!(!scrubbed.contains(&long[..32]), "{scrubbed}");
        assert!(scrubbed.contains("<parameter 1 (text)>"), "{scrubbed}");
    }
}
