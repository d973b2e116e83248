//! Streaming redaction of secret values in upstream responses.
//!
//! The proxy injects secret values into outbound requests, and an upstream may echo them back,
//! verbatim or encoded. Before a response reaches the agent, every injected value and each of
//! its common encodings is replaced by [`REDACTION_MARKER`].
//!
//! # Design
//!
//! [`RedactionSet`] expands each secret value into its encodings (raw bytes, base64 in four
//! flavours, percent-encoding in upper- and lower-case hex, two form-urlencodings, and for UTF-8
//! values the JSON string escapings of common serializers), removes duplicates, and compiles
//! them into one Aho-Corasick automaton with leftmost-longest semantics. Leftmost-longest makes
//! the result independent of pattern order: where one pattern is a prefix of another, the longer
//! one wins, so no fragment of a longer secret is left behind.
//!
//! [`StreamRedactor`] applies the set to a body that arrives in chunks. A match may straddle
//! chunk boundaries, so the redactor keeps a carry of at most `max_pattern_len() - 1`
//! unprocessed bytes. On each push it searches carry + chunk and treats a match as final only
//! when it starts at least `max_pattern_len()` bytes before the end of the buffer: every pattern
//! that could start at or before that position fits entirely inside the buffer, so bytes still
//! to come cannot change which match leftmost-longest would pick there. Everything before the
//! first undecided position is emitted at once. Consequently the streamed output equals
//! [`RedactionSet::redact_all`] on the concatenated input for every way of chunking it, and
//! memory stays bounded by the longest pattern no matter how large the body is.
//!
//! The automaton necessarily holds copies of the secret values for as long as the set lives,
//! which is why neither type derives `Debug`: their hand-written `Debug` impls print only counts.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_encode};
use url::form_urlencoded;

/// The text that replaces every occurrence of a secret value or one of its encodings.
pub const REDACTION_MARKER: &str = "[REDACTED_BY_AGENTSECRETS]";

/// Bytes that percent-encoding escapes: everything except the RFC 3986 unreserved characters
/// (`A-Z a-z 0-9 - . _ ~`).
const NOT_UNRESERVED: &AsciiSet =
    &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// The compiled patterns built from secret values and their encodings.
///
/// Share it behind an [`Arc`] between the header redaction ([`RedactionSet::redact_all`]) and
/// any number of [`StreamRedactor`]s.
pub struct RedactionSet {
    /// Leftmost-longest automaton over every distinct pattern.
    automaton: AhoCorasick,
    /// Number of distinct patterns, reported by `Debug` instead of the patterns themselves.
    pattern_count: usize,
    /// Length in bytes of the longest pattern; 0 when the set is empty.
    max_len: usize,
}

impl RedactionSet {
    /// Builds the set from raw secret values (empty values are skipped).
    ///
    /// Each value is expanded into its encodings; identical patterns, whether from one value or
    /// from several, are kept once.
    pub fn new<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> RedactionSet {
        let patterns = collect_patterns(values);
        let max_len = patterns.iter().map(Vec::len).max().unwrap_or(0);
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&patterns)
            // Building fails only when the automaton would exceed its internal state-ID limit
            // (about 2^31 states), which takes gigabytes of pattern bytes; secret values are
            // small. Panicking is also the safe failure mode: a proxy without a working
            // redactor must not forward responses.
            .expect("redaction patterns exceed the automaton's size limit");
        RedactionSet { automaton, pattern_count: patterns.len(), max_len }
    }

    /// Returns true when the set has no patterns, so redaction would never change anything.
    pub fn is_empty(&self) -> bool {
        self.pattern_count == 0
    }

    /// Redacts a whole buffer (used for header values). Returns the output and whether
    /// anything matched.
    pub fn redact_all(&self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut output = Vec::with_capacity(input.len());
        let prefix = self.redact_prefix(input, input.len(), &mut output);
        (output, prefix.matched)
    }

    /// Longest pattern length in bytes (0 for an empty set).
    pub fn max_pattern_len(&self) -> usize {
        self.max_len
    }

    /// Appends `buffer[..cut]` to `output` with every match that starts before `boundary`
    /// replaced by the marker, where `cut` is the later of `boundary` and the end of the last
    /// replaced match. Matches starting at or after `boundary` are left for a later call.
    fn redact_prefix(&self, buffer: &[u8], boundary: usize, output: &mut Vec<u8>) -> Prefix {
        let mut copied = 0;
        let mut matched = false;
        for found in self.automaton.find_iter(buffer) {
            if found.start() >= boundary {
                break;
            }
            output.extend_from_slice(&buffer[copied..found.start()]);
            output.extend_from_slice(REDACTION_MARKER.as_bytes());
            copied = found.end();
            matched = true;
        }
        let cut = copied.max(boundary);
        output.extend_from_slice(&buffer[copied..cut]);
        Prefix { cut, matched }
    }
}

impl fmt::Debug for RedactionSet {
    // The patterns are the secrets themselves, and even their lengths say something about
    // them, so only their number is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedactionSet")
            .field("patterns", &self.pattern_count)
            .finish_non_exhaustive()
    }
}

/// How much of a buffer [`RedactionSet::redact_prefix`] consumed.
struct Prefix {
    /// Bytes of the buffer that were written out (redacted); the rest is still undecided.
    cut: usize,
    /// Whether at least one match was replaced.
    matched: bool,
}

/// Chunk-by-chunk redactor for a response body; owns an [`Arc`] of the set so it can live in
/// a `'static` stream.
///
/// Feed every chunk to [`push`](StreamRedactor::push) and emit what it returns, then emit what
/// [`finish`](StreamRedactor::finish) returns. The concatenated output equals
/// [`RedactionSet::redact_all`] of the concatenated input, however the body was split.
pub struct StreamRedactor {
    /// The patterns to redact.
    set: Arc<RedactionSet>,
    /// Received bytes not yet emitted because a match might still start in them; never longer
    /// than `max_pattern_len() - 1` between calls.
    carry: Vec<u8>,
    /// Whether any match has been replaced so far.
    redacted: bool,
}

impl StreamRedactor {
    /// Creates a redactor for one body.
    pub fn new(set: Arc<RedactionSet>) -> StreamRedactor {
        StreamRedactor { set, carry: Vec::new(), redacted: false }
    }

    /// Feeds one chunk, returns the bytes that are now safe to emit (may be empty).
    ///
    /// At most `max_pattern_len() - 1` bytes are held back for the next call.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.carry.extend_from_slice(chunk);
        // A match starting before this boundary is decided: the longest pattern starting there
        // would end inside the buffer.
        let hold_back = self.set.max_len.saturating_sub(1);
        let boundary = self.carry.len().saturating_sub(hold_back);
        self.emit_before(boundary)
    }

    /// Ends the stream, returns the remaining bytes (redacted).
    ///
    /// The redactor is empty afterwards; further pushes would start a new body.
    pub fn finish(&mut self) -> Vec<u8> {
        // No more input can arrive, so every remaining match is decided.
        let boundary = self.carry.len();
        self.emit_before(boundary)
    }

    /// True once any match has been replaced.
    pub fn redacted(&self) -> bool {
        self.redacted
    }

    /// Redacts and removes the decided prefix of the carry, returning it.
    fn emit_before(&mut self, boundary: usize) -> Vec<u8> {
        let mut output = Vec::with_capacity(boundary);
        let prefix = self.set.redact_prefix(&self.carry, boundary, &mut output);
        self.redacted |= prefix.matched;
        self.carry.drain(..prefix.cut);
        output
    }
}

impl fmt::Debug for StreamRedactor {
    // The carry may hold the beginning of a secret, so only its length is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamRedactor")
            .field("set", &self.set)
            .field("carried_bytes", &self.carry.len())
            .field("redacted", &self.redacted)
            .finish()
    }
}

/// Expands every non-empty value into its encodings, keeping each distinct pattern once.
fn collect_patterns<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Vec<Vec<u8>> {
    let distinct: BTreeSet<Vec<u8>> =
        values.into_iter().filter(|value| !value.is_empty()).flat_map(encodings).collect();
    distinct.into_iter().collect()
}

/// All forms in which `value` may be echoed back, possibly with duplicates.
///
/// Byte-oriented encodings apply to any value; JSON escaping only to valid UTF-8, because JSON
/// strings cannot carry arbitrary bytes.
fn encodings(value: &[u8]) -> Vec<Vec<u8>> {
    let mut forms = vec![value.to_vec()];
    forms.extend(base64_forms(value));
    forms.extend(percent_forms(value));
    if let Ok(text) = std::str::from_utf8(value) {
        forms.extend(json_forms(text));
    }
    forms
}

/// Base64 in the standard and URL-safe alphabets, each padded and unpadded, plus the
/// value's base64 as it appears inside the encoding of a longer text (`Bearer <value>`,
/// `<value>:x`): at each of the three byte alignments, the characters that only the value's
/// bits determine.
fn base64_forms(value: &[u8]) -> Vec<Vec<u8>> {
    let mut forms: Vec<Vec<u8>> = [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .map(|engine| engine.encode(value).into_bytes())
        .into();
    for engine in [STANDARD_NO_PAD, URL_SAFE_NO_PAD] {
        for shift in 0..3 {
            let mut shifted = vec![0u8; shift];
            shifted.extend_from_slice(value);
            let encoded = engine.encode(&shifted).into_bytes();
            // Character i holds bits 6i..6i+6; the value's bits are 8*shift..8*len.
            let first = (8 * shift).div_ceil(6);
            let end = (8 * shifted.len()) / 6;
            // Shorter cores would match unrelated base64 text too often.
            if end >= first + MIN_BASE64_CORE {
                forms.push(encoded[first..end].to_vec());
            }
        }
    }
    forms
}

/// Fewest characters of an embedded base64 value that are redacted on their own.
const MIN_BASE64_CORE: usize = 8;

/// Percent-encoding with upper-case hex and with lower-case hex, and the two form-urlencoded
/// variants.
fn percent_forms(value: &[u8]) -> [Vec<u8>; 4] {
    let upper = percent_encode(value, NOT_UNRESERVED).to_string().into_bytes();
    let lower = lowercase_escapes(&upper);
    [upper, lower, form_urlencode_unreserved(value), form_urlencode_whatwg(value)]
}

/// Lower-cases the two hex digits after each `%` of a percent-encoded string.
///
/// Only the escapes are touched: unreserved letters outside them must keep their case.
fn lowercase_escapes(encoded: &[u8]) -> Vec<u8> {
    let mut hex_digits_left = 0;
    encoded
        .iter()
        .map(|&byte| {
            if byte == b'%' {
                hex_digits_left = 2;
                byte
            } else if hex_digits_left > 0 {
                hex_digits_left -= 1;
                byte.to_ascii_lowercase()
            } else {
                byte
            }
        })
        .collect()
}

/// Percent-encoding with upper-case hex in which spaces become `+` and the RFC 3986 unreserved
/// characters stay literal, as Python's `urllib.parse.urlencode` writes form bodies and query
/// strings.
fn form_urlencode_unreserved(value: &[u8]) -> Vec<u8> {
    // Encoding the space-separated pieces separately and joining them with `+` leaves every
    // other byte encoded exactly as in the plain percent form.
    let pieces: Vec<Vec<u8>> = value
        .split(|&byte| byte == b' ')
        .map(|piece| percent_encode(piece, NOT_UNRESERVED).to_string().into_bytes())
        .collect();
    pieces.join(&b'+')
}

/// The WHATWG `application/x-www-form-urlencoded` serialization: spaces become `+`, ASCII
/// alphanumerics and `*-._` stay literal, every other byte is percent-encoded in upper-case hex
/// (so `~` becomes `%7E`, unlike in the other forms).
///
/// This is exactly what the `url` crate's `form_urlencoded::Serializer` (and so
/// `Url::query_pairs_mut`) writes for a value, which is how query and form injection send
/// secrets upstream; the same bytes also come from Java's `URLEncoder`.
fn form_urlencode_whatwg(value: &[u8]) -> Vec<u8> {
    form_urlencoded::byte_serialize(value).collect::<String>().into_bytes()
}

/// Case of the hex digits in `\uXXXX` escapes.
#[derive(Clone, Copy)]
enum HexCase {
    /// `0-9a-f`.
    Lower,
    /// `0-9A-F`.
    Upper,
}

/// One way of escaping a string inside JSON quotes.
///
/// Every style escapes `"` and `\`, uses the short escapes `\b \f \n \r \t`, and writes the
/// other control characters (U+0000 to U+001F) as `\u00XX`; the fields add further escapes.
#[derive(Clone, Copy)]
struct JsonStyle {
    /// Escape every non-ASCII character as `\uXXXX`, astral ones as a UTF-16 surrogate pair.
    non_ascii: bool,
    /// Escape DEL (U+007F) as `\u007f`.
    del: bool,
    /// Escape `/` as `\/`.
    slash: bool,
    /// Escape `<`, `>`, `&` as `\u003c`, `\u003e`, `\u0026`.
    html: bool,
    /// Escape U+2028 and U+2029 as `\u2028` and `\u2029`.
    line_separators: bool,
    /// Case of the hex digits in every `\uXXXX` escape.
    hex: HexCase,
}

/// The style serde_json writes: only what JSON requires is escaped, `\u` escapes in lower case.
const SERDE_JSON: JsonStyle = JsonStyle {
    non_ascii: false,
    del: false,
    slash: false,
    html: false,
    line_separators: false,
    hex: HexCase::Lower,
};

/// The JSON string escapings under which a UTF-8 value is redacted.
const JSON_STYLES: [JsonStyle; 6] = [
    SERDE_JSON,
    // serde_json with `/` escaped, as some other serializers write it.
    JsonStyle { slash: true, ..SERDE_JSON },
    // Python's `json.dumps` with its default `ensure_ascii=True`: everything outside printable
    // ASCII is escaped, DEL included.
    JsonStyle { non_ascii: true, del: true, ..SERDE_JSON },
    // The same with upper-case hex, as serializers like Jackson and System.Text.Json write it.
    JsonStyle { non_ascii: true, del: true, hex: HexCase::Upper, ..SERDE_JSON },
    // PHP's `json_encode` with default flags: non-ASCII escaped, `/` escaped, DEL literal.
    JsonStyle { non_ascii: true, slash: true, ..SERDE_JSON },
    // Go's `encoding/json` (`json.Marshal`, Go 1.22 and later), which escapes HTML-sensitive
    // characters and the JavaScript line terminators by default.
    JsonStyle { html: true, line_separators: true, ..SERDE_JSON },
];

/// The JSON string escapings of `text` (without the quotes), one per entry of [`JSON_STYLES`].
fn json_forms(text: &str) -> [Vec<u8>; JSON_STYLES.len()] {
    JSON_STYLES.map(|style| json_escape(text, style).into_bytes())
}

/// Escapes `text` for the inside of a JSON string in the given style.
fn json_escape(text: &str, style: JsonStyle) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => escaped.push_str("\\\""),
            '\\' => escaped.push_str("\\\\"),
            '\u{8}' => escaped.push_str("\\b"),
            '\u{c}' => escaped.push_str("\\f"),
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            '/' if style.slash => escaped.push_str("\\/"),
            '\u{0}'..='\u{1f}' => push_unicode_escape(&mut escaped, c, style.hex),
            '<' | '>' | '&' if style.html => push_unicode_escape(&mut escaped, c, style.hex),
            '\u{7f}' if style.del => push_unicode_escape(&mut escaped, c, style.hex),
            '\u{2028}' | '\u{2029}' if style.line_separators => {
                push_unicode_escape(&mut escaped, c, style.hex);
            }
            _ if style.non_ascii && !c.is_ascii() => {
                push_unicode_escape(&mut escaped, c, style.hex);
            }
            _ => escaped.push(c),
        }
    }
    escaped
}

/// Appends `c` as `\uXXXX`, or as two such escapes (a UTF-16 surrogate pair) outside the BMP.
fn push_unicode_escape(escaped: &mut String, c: char, case: HexCase) {
    let digits: &[u8; 16] = match case {
        HexCase::Lower => b"0123456789abcdef",
        HexCase::Upper => b"0123456789ABCDEF",
    };
    let mut units = [0; 2];
    for &unit in c.encode_utf16(&mut units).iter() {
        escaped.push_str("\\u");
        for shift in [12, 8, 4, 0] {
            escaped.push(char::from(digits[usize::from((unit >> shift) & 0xf)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::sample::Index;

    const MARKER: &[u8] = REDACTION_MARKER.as_bytes();

    fn set_of(values: &[&[u8]]) -> Arc<RedactionSet> {
        Arc::new(RedactionSet::new(values.iter().copied()))
    }

    /// Streams `chunks` through a fresh redactor, checking the carry bound after every push.
    fn stream<'a>(
        set: &Arc<RedactionSet>,
        chunks: impl IntoIterator<Item = &'a [u8]>,
    ) -> (Vec<u8>, bool) {
        let mut redactor = StreamRedactor::new(Arc::clone(set));
        let mut output = Vec::new();
        for chunk in chunks {
            output.extend(redactor.push(chunk));
            assert!(redactor.carry.len() <= set.max_pattern_len().saturating_sub(1));
        }
        output.extend(redactor.finish());
        assert!(redactor.carry.is_empty());
        (output, redactor.redacted())
    }

    /// Splits `data` at the given offsets (in any order, duplicates give empty chunks).
    fn split_at_offsets<'a>(data: &'a [u8], offsets: &[usize]) -> Vec<&'a [u8]> {
        let mut offsets = offsets.to_vec();
        offsets.sort_unstable();
        let mut chunks = Vec::new();
        let mut start = 0;
        for offset in offsets {
            chunks.push(&data[start..offset]);
            start = offset;
        }
        chunks.push(&data[start..]);
        chunks
    }

    fn marked(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn replaces_raw_value() {
        let set = set_of(&[b"s3cr3t"]);
        let (output, matched) = set.redact_all(b"token=s3cr3t;");
        assert_eq!(output, marked(&[b"token=", MARKER, b";"]));
        assert!(matched);
    }

    #[test]
    fn reports_no_match() {
        let set = set_of(&[b"s3cr3t"]);
        assert_eq!(set.redact_all(b"nothing here"), (b"nothing here".to_vec(), false));
        assert_eq!(stream(&set, [&b"nothing "[..], b"here"]), (b"nothing here".to_vec(), false));
    }

    #[test]
    fn encodings_of_utf8_value() {
        let forms = encodings("a b/é\"~*&\n".as_bytes());
        let expected: &[&[u8]] = &[
            "a b/é\"~*&\n".as_bytes(),
            b"YSBiL8OpIn4qJgo=",
            b"YSBiL8OpIn4qJgo",
            b"YSBiL8OpIn4qJgo=",
            b"YSBiL8OpIn4qJgo",
            // Inside the base64 of a longer text, at the three alignments, per alphabet.
            b"YSBiL8OpIn4qJg",
            b"EgYi/DqSJ+KiYK",
            b"hIGIvw6kifiomC",
            b"YSBiL8OpIn4qJg",
            b"EgYi_DqSJ-KiYK",
            b"hIGIvw6kifiomC",
            b"a%20b%2F%C3%A9%22~%2A%26%0A",
            b"a%20b%2f%c3%a9%22~%2a%26%0a",
            b"a+b%2F%C3%A9%22~%2A%26%0A",
            b"a+b%2F%C3%A9%22%7E*%26%0A",
            "a b/é\\\"~*&\\n".as_bytes(),
            "a b\\/é\\\"~*&\\n".as_bytes(),
            b"a b/\\u00e9\\\"~*&\\n",
            b"a b/\\u00E9\\\"~*&\\n",
            b"a b\\/\\u00e9\\\"~*&\\n",
            "a b/é\\\"~*\\u0026\\n".as_bytes(),
        ];
        assert_eq!(forms.len(), expected.len());
        let distinct_forms: BTreeSet<&[u8]> = forms.iter().map(Vec::as_slice).collect();
        let distinct_expected: BTreeSet<&[u8]> = expected.iter().copied().collect();
        assert_eq!(distinct_forms, distinct_expected);
        // The two base64 alphabets coincide here (the value's full encoding has no `+` or
        // `/`), and so do two of the three embedded forms.
        assert_eq!(distinct_forms.len(), expected.len() - 4);
    }

    #[test]
    fn json_escapes_control_characters_like_serde() {
        let text = "tab\there\u{1}\u{8}\u{c}\r";
        let escaped = json_escape(text, SERDE_JSON);
        assert_eq!(escaped, "tab\\there\\u0001\\b\\f\\r");
        assert_eq!(format!("\"{escaped}\""), serde_json::to_string(text).unwrap());
    }

    #[test]
    fn json_ascii_forms_escape_like_python() {
        // Python: json.dumps("x\x7f\u2028<é😀\x1f/")
        //   == r'"x\u007f\u2028<\u00e9\ud83d\ude00\u001f/"'
        let forms = json_forms("x\u{7f}\u{2028}<é😀\u{1f}/");
        let lower = br"x\u007f\u2028<\u00e9\ud83d\ude00\u001f/";
        let upper = br"x\u007F\u2028<\u00E9\uD83D\uDE00\u001F/";
        assert!(forms.iter().any(|form| form == lower), "Python's ensure_ascii form");
        assert!(forms.iter().any(|form| form == upper), "upper-case hex form");
    }

    #[test]
    fn json_ascii_form_with_escaped_slash_like_php() {
        // PHP: json_encode("é/\x7f😀") === '"\u00e9\/' . "\x7f" . '\ud83d\ude00"'
        let forms = json_forms("é/\u{7f}😀");
        let php: &[u8] = b"\\u00e9\\/\x7f\\ud83d\\ude00";
        assert!(forms.iter().any(|form| form == php));
    }

    #[test]
    fn json_form_escapes_html_like_go() {
        // Go: json.Marshal("\"<a&b>\u2028é\n") gives "\"\u003ca\u0026b\u003e\u2028é\n" (Go
        // escapes `<`, `>`, `&` and the line separators, nothing else beyond serde_json).
        let forms = json_forms("\"<a&b>\u{2028}é\n\u{7f}/");
        let go = "\\\"\\u003ca\\u0026b\\u003e\\u2028é\\n\u{7f}/";
        assert!(forms.iter().any(|form| form == go.as_bytes()));
    }

    #[test]
    fn json_forms_are_redacted() {
        let set = set_of(&["<pä$$>&/".as_bytes()]);
        let body = "{\"python\":\"<p\\u00e4$$>&/\",\"dotnet\":\"<p\\u00E4$$>&/\",\
                    \"php\":\"<p\\u00e4$$>&\\/\",\"go\":\"\\u003cpä$$\\u003e\\u0026/\"}";
        let expected = marked(&[
            b"{\"python\":\"",
            MARKER,
            b"\",\"dotnet\":\"",
            MARKER,
            b"\",\"php\":\"",
            MARKER,
            b"\",\"go\":\"",
            MARKER,
            b"\"}",
        ]);
        assert_eq!(set.redact_all(body.as_bytes()), (expected, true));
    }

    #[test]
    fn whatwg_form_matches_url_crate() {
        let value = "a b~*-._!'()+é";
        let form = form_urlencode_whatwg(value.as_bytes());
        assert_eq!(form, b"a+b%7E*-._%21%27%28%29%2B%C3%A9");
        assert_eq!(form_pair(value), format!("k={}", String::from_utf8(form.clone()).unwrap()));
        assert_eq!(query_pair(value), form_pair(value));
        // An upstream that echoes the injected query or form value is redacted.
        let set = set_of(&[value.as_bytes()]);
        let body = format!("you sent {}!", form_pair(value));
        assert_eq!(
            set.redact_all(body.as_bytes()),
            (marked(&[b"you sent k=", MARKER, b"!"]), true)
        );
    }

    /// `k=value` as form injection writes it (`form_urlencoded::Serializer`).
    fn form_pair(value: &str) -> String {
        form_urlencoded::Serializer::new(String::new()).append_pair("k", value).finish()
    }

    /// `k=value` as query injection writes it (`Url::query_pairs_mut`).
    fn query_pair(value: &str) -> String {
        let mut url = url::Url::parse("https://upstream.invalid/path").unwrap();
        url.query_pairs_mut().append_pair("k", value);
        url.query().unwrap_or_default().to_owned()
    }

    #[test]
    fn lowercase_escapes_keep_unreserved_letters() {
        assert_eq!(lowercase_escapes(b"AB%2FCD%C3%A9E"), b"AB%2fCD%c3%a9E");
    }

    #[test]
    fn non_utf8_value_gets_only_byte_forms() {
        let value = [0xff, 0xfe, b' ', b'/'];
        let forms: BTreeSet<Vec<u8>> = encodings(&value).into_iter().collect();
        let expected: BTreeSet<Vec<u8>> = [
            &value[..],
            b"//4gLw==",
            b"//4gLw",
            b"__4gLw==",
            b"__4gLw",
            b"%FF%FE%20%2F",
            b"%ff%fe%20%2f",
            b"%FF%FE+%2F",
        ]
        .into_iter()
        .map(<[u8]>::to_vec)
        .collect();
        assert_eq!(forms, expected);
    }

    #[test]
    fn duplicate_encodings_are_kept_once() {
        // Alphanumeric values percent-encode to themselves and base64 forms coincide.
        let set = RedactionSet::new([&b"abc"[..], b"abc"]);
        // raw, "YWJj" (all four base64 forms agree), JSON forms equal raw.
        assert_eq!(set.pattern_count, 2);
        assert_eq!(set.max_pattern_len(), 4);
    }

    #[test]
    fn match_straddling_two_chunks() {
        let set = set_of(&[b"s3cr3t-value"]);
        let body = b"before s3cr3t-value after";
        let expected = marked(&[b"before ", MARKER, b" after"]);
        for cut in 0..=body.len() {
            assert_eq!(stream(&set, split_at_offsets(body, &[cut])), (expected.clone(), true));
        }
    }

    #[test]
    fn match_straddling_three_chunks() {
        let set = set_of(&[b"s3cr3t-value"]);
        let chunks: [&[u8]; 3] = [b"before s3c", b"r3t-va", b"lue after"];
        let expected = marked(&[b"before ", MARKER, b" after"]);
        assert_eq!(stream(&set, chunks), (expected, true));
    }

    #[test]
    fn adjacent_matches() {
        let set = set_of(&[b"key1", b"key2"]);
        let body = b"key1key2key1";
        let expected = marked(&[MARKER, MARKER, MARKER]);
        assert_eq!(set.redact_all(body), (expected.clone(), true));
        assert_eq!(stream(&set, body.chunks(1)), (expected, true));
    }

    #[test]
    fn longer_value_wins_over_its_prefix() {
        let set = set_of(&[b"abc", b"abcdef"]);
        let body = b"<abcdef><abcxyz>";
        let expected = marked(&[b"<", MARKER, b"><", MARKER, b"xyz>"]);
        assert_eq!(set.redact_all(body), (expected.clone(), true));
        for size in 1..=body.len() {
            assert_eq!(stream(&set, body.chunks(size)), (expected.clone(), true));
        }
    }

    #[test]
    fn basic_credential_in_base64() {
        let set = set_of(&[b"user:pass"]);
        let (output, matched) = set.redact_all(b"Basic dXNlcjpwYXNz");
        assert_eq!(output, marked(&[b"Basic ", MARKER]));
        assert!(matched);
    }

    #[test]
    fn base64_of_a_longer_text_holding_the_value_is_redacted() {
        let value = b"sk_live_0123456789abcdef/+=z";
        let set = set_of(&[value]);
        for prefix in [&b""[..], b"B", b"Bearer ", b"ab"] {
            for suffix in [&b""[..], b":x", b" | other text"] {
                let mut text = prefix.to_vec();
                text.extend_from_slice(value);
                text.extend_from_slice(suffix);
                for engine in [STANDARD, URL_SAFE_NO_PAD] {
                    let body = engine.encode(&text).into_bytes();
                    let (output, matched) = set.redact_all(&body);
                    assert!(matched, "{}", String::from_utf8_lossy(&body));
                    // What is left around the markers is too short to hold the value.
                    let text = String::from_utf8_lossy(&output).into_owned();
                    for rest in text.split(REDACTION_MARKER) {
                        assert!(rest.len() < value.len(), "{text}");
                    }
                }
            }
        }
    }

    #[test]
    fn encoded_forms_are_redacted() {
        let set = set_of(&["p@ss wörd/1".as_bytes()]);
        let body = "a=p%40ss%20w%C3%B6rd%2F1&b=p%40ss+w%C3%B6rd%2F1&c=p%40ss%20w%c3%b6rd%2f1 \
                    {\"d\":\"p@ss wörd\\/1\"}";
        let expected =
            marked(&[b"a=", MARKER, b"&b=", MARKER, b"&c=", MARKER, b" {\"d\":\"", MARKER, b"\"}"]);
        assert_eq!(set.redact_all(body.as_bytes()), (expected, true));
    }

    #[test]
    fn empty_set_passes_through_unchanged() {
        let set = set_of(&[b"", b""]);
        assert!(set.is_empty());
        assert_eq!(set.max_pattern_len(), 0);
        let body = b"any body at all";
        assert_eq!(set.redact_all(body), (body.to_vec(), false));
        let mut redactor = StreamRedactor::new(Arc::clone(&set));
        // Nothing can match, so nothing is held back.
        assert_eq!(redactor.push(b"any body "), b"any body ");
        assert_eq!(redactor.push(b"at all"), b"at all");
        assert_eq!(redactor.finish(), b"");
        assert!(!redactor.redacted());
    }

    #[test]
    fn carry_stays_below_longest_pattern() {
        let set = set_of(&[b"0123456789abcdef"]);
        let hold_back = set.max_pattern_len() - 1;
        let mut redactor = StreamRedactor::new(Arc::clone(&set));
        let mut emitted = 0;
        for _ in 0..100 {
            emitted += redactor.push(&[b'x'; 1000]).len();
            assert!(redactor.carry.len() <= hold_back);
        }
        // Bytes that cannot start a match are passed on immediately.
        assert_eq!(emitted, 100 * 1000 - hold_back);
        assert_eq!(redactor.finish().len(), hold_back);
    }

    #[test]
    fn partial_match_at_end_is_flushed_by_finish() {
        let set = set_of(&[b"secret"]);
        let mut redactor = StreamRedactor::new(Arc::clone(&set));
        let mut output = redactor.push(b"ends with secr");
        output.extend(redactor.finish());
        assert_eq!(output, b"ends with secr");
        assert!(!redactor.redacted());
    }

    #[test]
    fn debug_does_not_reveal_patterns() {
        let set = set_of(&[b"hunter2"]);
        let mut redactor = StreamRedactor::new(Arc::clone(&set));
        redactor.push(b"hunter");
        for text in [format!("{set:?}"), format!("{redactor:?}")] {
            assert!(!text.contains("hunter"), "{text}");
            assert!(!text.contains("aHVudGVy"), "{text}");
        }
    }

    /// Bytes that never occur in generated secrets nor in any encoding of them (all encodings
    /// are ASCII from `A-Za-z0-9+/=_-.~*%\`, plus the secret's own bytes).
    const FILLER: &[u8] = b"|<>^`";

    fn secret_strategy() -> impl Strategy<Value = Vec<u8>> {
        let not_filler = |byte: &u8| !FILLER.contains(byte);
        let text_char = prop_oneof![
            proptest::char::range(' ', '~'),
            proptest::char::range('\u{0}', '\u{1f}'),
            any::<char>(),
        ]
        .prop_filter("filler character", move |c| !c.is_ascii() || not_filler(&(*c as u8)));
        let text = proptest::collection::vec(text_char, 1..40).prop_map(|chars| {
            let text: String = chars.into_iter().collect();
            // Cut to at most 40 bytes without splitting a character.
            text.as_bytes()[..text.floor_char_boundary(40)].to_vec()
        });
        let bytes =
            proptest::collection::vec(any::<u8>().prop_filter("filler", not_filler), 1..=40);
        prop_oneof![3 => text, 1 => bytes]
    }

    fn filler_strategy(min: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(proptest::sample::select(FILLER), min..12)
    }

    /// Byte offsets at which to cut a body, or `None` for one-byte chunks.
    fn cuts_strategy() -> impl Strategy<Value = Option<Vec<Index>>> {
        prop_oneof![Just(None), proptest::collection::vec(any::<Index>(), 0..12).prop_map(Some)]
    }

    fn chunks_of<'a>(body: &'a [u8], cuts: &Option<Vec<Index>>) -> Vec<&'a [u8]> {
        match cuts {
            None => body.chunks(1).collect(),
            Some(cuts) => {
                let offsets: Vec<usize> =
                    cuts.iter().map(|cut| cut.index(body.len() + 1)).collect();
                split_at_offsets(body, &offsets)
            }
        }
    }

    proptest! {
        #[test]
        fn streaming_equals_whole_buffer_and_hides_every_encoding(
            secret in secret_strategy(),
            lead in filler_strategy(0),
            embedded in proptest::collection::vec((any::<Index>(), filler_strategy(1)), 1..6),
            cuts in cuts_strategy(),
        ) {
            let forms = encodings(&secret);
            let set = Arc::new(RedactionSet::new([secret.as_slice()]));
            // Each embedded form is followed by filler, so it is a whole run of non-filler
            // bytes and must be replaced by exactly one marker.
            let mut body = lead.clone();
            let mut expected = lead;
            for (which, filler) in &embedded {
                let form: &Vec<u8> = which.get(&forms);
                body.extend_from_slice(form);
                body.extend_from_slice(filler);
                expected.extend_from_slice(MARKER);
                expected.extend_from_slice(filler);
            }

            let (whole, matched) = set.redact_all(&body);
            prop_assert_eq!(&whole, &expected);
            prop_assert!(matched);
            let streamed = stream(&set, chunks_of(&body, &cuts));
            prop_assert_eq!(streamed, (whole.clone(), true));

            let text_between_markers = split_on_marker(&whole);
            for form in &forms {
                for piece in &text_between_markers {
                    prop_assert!(!contains(piece, form));
                }
            }
        }

        #[test]
        fn json_forms_decode_to_the_value(text in any::<String>()) {
            let forms = json_forms(&text);
            for form in &forms {
                let quoted = format!("\"{}\"", std::str::from_utf8(form).unwrap());
                prop_assert_eq!(serde_json::from_str::<String>(&quoted).unwrap(), text.as_str());
            }
            let serde = serde_json::to_string(&text).unwrap();
            prop_assert_eq!(&serde.as_bytes()[1..serde.len() - 1], forms[0].as_slice());
            for style in JSON_STYLES.iter().filter(|style| style.non_ascii && style.del) {
                let escaped = json_escape(&text, *style);
                prop_assert!(escaped.bytes().all(|byte| (b' '..=b'~').contains(&byte)));
            }
        }

        #[test]
        fn whatwg_form_equals_injected_query_and_form(text in any::<String>()) {
            let form = String::from_utf8(form_urlencode_whatwg(text.as_bytes())).unwrap();
            prop_assert_eq!(form_pair(&text), format!("k={form}"));
            prop_assert_eq!(query_pair(&text), format!("k={form}"));
        }

        #[test]
        fn streaming_equals_whole_buffer_with_overlapping_values(
            values in proptest::collection::vec("[abc]{1,6}", 1..4),
            body in "[abc]{0,80}",
            cuts in cuts_strategy(),
        ) {
            let set = Arc::new(RedactionSet::new(values.iter().map(|value| value.as_bytes())));
            let whole = set.redact_all(body.as_bytes());
            prop_assert_eq!(stream(&set, chunks_of(body.as_bytes(), &cuts)), whole);
        }
    }

    fn split_on_marker(text: &[u8]) -> Vec<&[u8]> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(at) = find(rest, MARKER) {
            pieces.push(&rest[..at]);
            rest = &rest[at + MARKER.len()..];
        }
        pieces.push(rest);
        pieces
    }

    fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack.windows(needle.len()).position(|window| window == needle)
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        find(haystack, needle).is_some()
    }
}
