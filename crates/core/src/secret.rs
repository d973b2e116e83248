//! The one type that holds a secret value in memory.

use zeroize::Zeroizing;

/// A secret value, zeroized when dropped.
///
/// It implements neither `Display` nor a revealing `Debug`, and has no `Serialize`: the
/// only way to the bytes is [`SecretValue::expose`], whose name makes every use visible
/// in review.
#[derive(Clone)]
pub struct SecretValue(Zeroizing<Vec<u8>>);

impl SecretValue {
    /// Wraps bytes that are already owned, taking responsibility for zeroizing them.
    pub fn new(bytes: Vec<u8>) -> SecretValue {
        SecretValue(Zeroizing::new(bytes))
    }

    /// Copies a string value into a zeroizing buffer.
    pub fn from_str_value(value: &str) -> SecretValue {
        SecretValue::new(value.as_bytes().to_vec())
    }

    /// The raw bytes. Every caller must make sure they go only where the secret is meant to go.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The value as UTF-8 text, when it is valid UTF-8.
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// Length in bytes; safe to show.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when the value holds a byte that would let it split an HTTP header or line
    /// (CR, LF or NUL), so it can never be injected into a header.
    pub fn has_line_break_or_nul(&self) -> bool {
        self.0.iter().any(|b| matches!(b, b'\r' | b'\n' | 0))
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretValue([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let value = SecretValue::from_str_value("canary-0xDEADBEEF");
        let printed = format!("{value:?} {:#?}", value);

        assert!(!printed.contains("canary"));
        assert!(printed.contains("[redacted]"));
    }

    #[test]
    fn detects_header_splitting_bytes() {
        assert!(SecretValue::from_str_value("a\r\nb").has_line_break_or_nul());
        assert!(SecretValue::new(vec![b'a', 0]).has_line_break_or_nul());
        assert!(!SecretValue::from_str_value("plain-token").has_line_break_or_nul());
    }
}
