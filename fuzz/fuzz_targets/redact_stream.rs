//! The streaming redactor (`agentsecrets_core::redact`).
//!
//! The fuzz input picks one to three secret values, builds a body from filler bytes and
//! occurrences of the secrets in every encoding the redactor documents (raw; base64 standard
//! and URL-safe, padded and not; percent-encoding with upper- and lower-case hex; the two
//! form-urlencodings; and for UTF-8 values the six JSON string escapings), and splits the body
//! into chunks at fuzz-chosen offsets. The encodings are computed here independently of the
//! library, so a form the redactor silently dropped would be caught.
//!
//! Asserted, as `redact.rs` documents it:
//! - every encoding computed here is a pattern of the set: alone, it redacts to the marker;
//! - the streamed output equals `RedactionSet::redact_all` of the whole body, for this
//!   chunking, and `redacted()` agrees;
//! - until the first match, the output is the input verbatim and at most
//!   `max_pattern_len() - 1` bytes are held back;
//! - no secret and no encoding of one occurs in the output except where the occurrence
//!   overlaps a marker (the marker's own bytes next to left-over input can spell a secret
//!   that starts with the marker's tail, e.g. `S]ab` in `..._AGENTSECRETS]ab`; no input
//!   byte that formed an occurrence survives);
//! - a body that contains any of them is reported as redacted.
#![no_main]

use std::sync::Arc;

use agentsecrets_core::redact::{REDACTION_MARKER, RedactionSet, StreamRedactor};
use arbitrary::Arbitrary;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use libfuzzer_sys::fuzz_target;

const MAX_SECRET: usize = 40;
const MAX_BODY: usize = 4096;

#[derive(Arbitrary, Debug)]
enum Piece {
    Filler(Vec<u8>),
    Secret {
        which: u8,
        form: u8,
    },
    /// A prefix of an encoded secret: a near miss that must be kept.
    Partial {
        which: u8,
        form: u8,
        cut: u8,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    first: Vec<u8>,
    more: Vec<Vec<u8>>,
    pieces: Vec<Piece>,
    cuts: Vec<u16>,
}

fuzz_target!(|input: Input| {
    let mut secrets: Vec<Vec<u8>> = Vec::new();
    for value in std::iter::once(input.first).chain(input.more.into_iter().take(2)) {
        let value: Vec<u8> = value.into_iter().take(MAX_SECRET).collect();
        if !value.is_empty() {
            secrets.push(value);
        }
    }
    if secrets.is_empty() {
        return;
    }
    let forms: Vec<Vec<Vec<u8>>> = secrets.iter().map(|s| encodings(s)).collect();
    let set = Arc::new(RedactionSet::new(secrets.iter().map(Vec::as_slice)));
    let marker = REDACTION_MARKER.as_bytes();

    for form in forms.iter().flatten() {
        assert_eq!(set.redact_all(form).0, marker, "an encoding the redactor claims is missed");
    }

    let mut body = Vec::new();
    for piece in input.pieces {
        match piece {
            Piece::Filler(bytes) => body.extend_from_slice(&bytes),
            Piece::Secret { which, form } => body.extend_from_slice(pick(&forms, which, form)),
            Piece::Partial { which, form, cut } => {
                let form = pick(&forms, which, form);
                body.extend_from_slice(&form[..usize::from(cut) % form.len()]);
            }
        }
        if body.len() > MAX_BODY {
            body.truncate(MAX_BODY);
            break;
        }
    }

    let mut offsets: Vec<usize> =
        input.cuts.iter().map(|&c| usize::from(c) % (body.len() + 1)).collect();
    offsets.sort_unstable();
    offsets.push(body.len());

    let hold_back = set.max_pattern_len().saturating_sub(1);
    let mut redactor = StreamRedactor::new(Arc::clone(&set));
    let mut output = Vec::new();
    let mut start = 0;
    for end in offsets {
        output.extend(redactor.push(&body[start..end]));
        start = end;
        if !redactor.redacted() {
            assert_eq!(output, body[..output.len()], "unredacted output differs from input");
            assert!(output.len() + hold_back >= end, "more than max_pattern_len - 1 held back");
        }
    }
    output.extend(redactor.finish());

    let (whole, whole_redacted) = set.redact_all(&body);
    assert_eq!(output, whole, "streamed output differs from redact_all");
    assert_eq!(redactor.redacted(), whole_redacted);
    if !whole_redacted {
        assert_eq!(output, body);
    }

    let markers: Vec<usize> = occurrences(&output, marker).collect();
    for form in forms.iter().flatten() {
        if occurrences(&body, form).next().is_some() {
            assert!(whole_redacted, "a body holding a secret was not reported as redacted");
        }
        for at in occurrences(&output, form) {
            let overlaps = markers.iter().any(|&m| at < m + marker.len() && m < at + form.len());
            assert!(overlaps, "a secret or encoding survived redaction at {at}");
        }
    }
});

fn pick(forms: &[Vec<Vec<u8>>], which: u8, form: u8) -> &[u8] {
    let of_secret = &forms[usize::from(which) % forms.len()];
    &of_secret[usize::from(form) % of_secret.len()]
}

/// Start offsets of every (possibly overlapping) occurrence of `needle` in `hay`.
fn occurrences<'a>(hay: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    hay.windows(needle.len()).enumerate().filter(move |(_, w)| *w == needle).map(|(i, _)| i)
}

/// Every form in which `redact.rs` says it redacts `value`, computed independently.
fn encodings(value: &[u8]) -> Vec<Vec<u8>> {
    let mut forms = vec![value.to_vec()];
    for engine in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
        forms.push(engine.encode(value).into_bytes());
    }
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || b"-._~".contains(&b);
    let whatwg = |b: u8| b.is_ascii_alphanumeric() || b"*-._".contains(&b);
    forms.push(percent(value, unreserved, false, b"0123456789ABCDEF"));
    forms.push(percent(value, unreserved, false, b"0123456789abcdef"));
    forms.push(percent(value, unreserved, true, b"0123456789ABCDEF"));
    forms.push(percent(value, whatwg, true, b"0123456789ABCDEF"));
    if let Ok(text) = std::str::from_utf8(value) {
        let quoted = serde_json::to_string(text).expect("a str serializes");
        let serde = &quoted[1..quoted.len() - 1];
        let reescape = |f: &dyn Fn(char) -> Option<String>| -> Vec<u8> {
            let mut out = String::new();
            for c in serde.chars() {
                match f(c) {
                    Some(escaped) => out.push_str(&escaped),
                    None => out.push(c),
                }
            }
            out.into_bytes()
        };
        let non_ascii = |c: char| (!c.is_ascii()).then(|| utf16_escape(c));
        // serde_json as it is, and with `/` escaped.
        forms.push(serde.as_bytes().to_vec());
        forms.push(reescape(&|c| (c == '/').then(|| "\\/".to_owned())));
        // Python's ensure_ascii: non-ASCII and DEL escaped; lower and upper-case hex.
        let python =
            reescape(&|c| if c == '\u{7f}' { Some(utf16_escape(c)) } else { non_ascii(c) });
        forms.push(upper_hex_escapes(&python));
        forms.push(python);
        // PHP: non-ASCII and `/` escaped, DEL literal.
        forms.push(reescape(&|c| if c == '/' { Some("\\/".to_owned()) } else { non_ascii(c) }));
        // Go: `<`, `>`, `&`, U+2028 and U+2029 escaped.
        forms.push(reescape(&|c| {
            matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}').then(|| utf16_escape(c))
        }));
    }
    forms
}

fn percent(value: &[u8], keep: impl Fn(u8) -> bool, space_plus: bool, hex: &[u8; 16]) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in value {
        if keep(b) {
            out.push(b);
        } else if space_plus && b == b' ' {
            out.push(b'+');
        } else {
            out.extend_from_slice(&[b'%', hex[usize::from(b >> 4)], hex[usize::from(b & 15)]]);
        }
    }
    out
}

/// `\uXXXX` (lower-case hex), twice for a character outside the BMP.
fn utf16_escape(c: char) -> String {
    let mut units = [0u16; 2];
    c.encode_utf16(&mut units).iter().map(|u| format!("\\u{u:04x}")).collect()
}

/// Upper-cases the hex digits of every `\uXXXX` escape, leaving `\\u` (an escaped backslash
/// followed by a literal `u`) alone.
fn upper_hex_escapes(escaped: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(escaped.len());
    let mut i = 0;
    while i < escaped.len() {
        if escaped[i] == b'\\' && i + 1 < escaped.len() {
            let is_unicode = escaped[i + 1] == b'u';
            out.extend_from_slice(&escaped[i..i + 2]);
            i += 2;
            if is_unicode {
                out.extend(escaped[i..i + 4].iter().map(u8::to_ascii_uppercase));
                i += 4;
            }
        } else {
            out.push(escaped[i]);
            i += 1;
        }
    }
    out
}
