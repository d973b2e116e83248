//! Parsing of `.env` files for `secrets import`.
//!
//! The accepted syntax is the common subset of the popular dotenv implementations:
//!
//! - blank lines and lines whose first non-blank character is `#` are skipped;
//! - an assignment is `KEY=value`, optionally preceded by `export `; whitespace around `=`
//!   and around an unquoted value is trimmed;
//! - an unquoted value ends at whitespace followed by `#` (an inline comment), so `a#b` keeps
//!   its `#`;
//! - a single-quoted value is taken literally;
//! - a double-quoted value understands the escapes `\n`, `\r`, `\t`, `\"` and `\\`; any other
//!   backslash is kept as written, so Windows paths survive;
//! - a quoted value of either kind may span several lines up to its closing quote, each line
//!   break becoming `\n` (also for CRLF files, so the value does not depend on the editor);
//! - after a closing quote only whitespace or a `# comment` may follow;
//! - a UTF-8 byte order mark at the start is ignored, and CRLF line endings are accepted.
//!
//! Keys are returned as written, apart from surrounding whitespace: the caller validates them
//! against its own naming rules. Here they are only checked to be non-empty and free of
//! whitespace, which would otherwise indicate a malformed line. Every assignment is returned
//! in file order, duplicates included, so the caller decides which one wins.
//!
//! Values are secrets. They are held in [`Zeroizing`] strings, the hand-written `Debug` of
//! [`DotenvEntry`] hides them, and no [`DotenvError`] message quotes any text from the file:
//! a malformed line may well be a secret pasted on its own.

use std::fmt;

use zeroize::Zeroizing;

/// One parsed assignment.
#[derive(Clone, PartialEq, Eq)]
pub struct DotenvEntry {
    /// The variable name as written (surrounding whitespace and `export ` removed).
    pub key: String,
    /// The value after unquoting and unescaping; wiped from memory when dropped.
    pub value: Zeroizing<String>,
    /// The 1-based line on which the assignment starts.
    pub line: usize,
}

impl fmt::Debug for DotenvEntry {
    // The value is sensitive: only the key and position may appear in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DotenvEntry")
            .field("key", &self.key)
            .field("value", &format_args!("[redacted]"))
            .field("line", &self.line)
            .finish()
    }
}

/// Why a dotenv file could not be parsed. Every variant names the 1-based line at fault and
/// none quotes the file's contents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DotenvError {
    /// A non-comment line has no `=`.
    #[error("line {line}: expected KEY=value but found no '='")]
    MissingEquals {
        /// The offending line.
        line: usize,
    },
    /// Nothing precedes the `=`.
    #[error("line {line}: missing variable name before '='")]
    EmptyKey {
        /// The offending line.
        line: usize,
    },
    /// The text before the `=` contains whitespace.
    #[error("line {line}: variable name contains whitespace")]
    KeyWithWhitespace {
        /// The offending line.
        line: usize,
    },
    /// A quoted value has no closing quote before the end of the file.
    #[error("line {line}: quoted value is never closed")]
    UnterminatedQuote {
        /// The line on which the quoted value starts.
        line: usize,
    },
    /// Something other than whitespace or a comment follows a closing quote.
    #[error("line {line}: unexpected text after closing quote")]
    TextAfterQuote {
        /// The line holding the closing quote.
        line: usize,
    },
}

impl DotenvError {
    /// The 1-based line the error refers to.
    pub fn line(&self) -> usize {
        match *self {
            DotenvError::MissingEquals { line }
            | DotenvError::EmptyKey { line }
            | DotenvError::KeyWithWhitespace { line }
            | DotenvError::UnterminatedQuote { line }
            | DotenvError::TextAfterQuote { line } => line,
        }
    }
}

/// Parses dotenv text. Errors name the 1-based line and the problem.
pub fn parse(input: &str) -> Result<Vec<DotenvEntry>, DotenvError> {
    let text = input.strip_prefix('\u{feff}').unwrap_or(input);
    // `str::lines` also strips the `\r` of CRLF endings.
    let mut lines = (1..).zip(text.lines());
    let mut entries = Vec::new();
    while let Some((number, line)) = lines.next() {
        let content = line.trim();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        entries.push(parse_assignment(number, content, &mut lines)?);
    }
    Ok(entries)
}

/// Parses the assignment starting on line `number`, whose trimmed text is `content`; a quoted
/// value may consume further lines from `lines`.
fn parse_assignment<'a>(
    number: usize,
    content: &'a str,
    lines: &mut impl Iterator<Item = (usize, &'a str)>,
) -> Result<DotenvEntry, DotenvError> {
    let content = strip_export(content);
    let (key, raw_value) =
        content.split_once('=').ok_or(DotenvError::MissingEquals { line: number })?;
    let key = parse_key(key, number)?;
    let value = parse_value(raw_value, number, lines)?;
    Ok(DotenvEntry { key, value, line: number })
}

/// Removes a leading `export` keyword followed by whitespace.
///
/// A variable literally named `export` (`export=1`, `export = 1`) is left alone.
fn strip_export(content: &str) -> &str {
    match content.strip_prefix("export") {
        Some(rest)
            if rest.starts_with(char::is_whitespace) && !rest.trim_start().starts_with('=') =>
        {
            rest.trim_start()
        }
        _ => content,
    }
}

/// Trims the text before `=` and checks that it can be a variable name at all.
fn parse_key(raw: &str, number: usize) -> Result<String, DotenvError> {
    let key = raw.trim();
    if key.is_empty() {
        return Err(DotenvError::EmptyKey { line: number });
    }
    if key.contains(char::is_whitespace) {
        return Err(DotenvError::KeyWithWhitespace { line: number });
    }
    Ok(key.to_owned())
}

/// Parses the text after `=`, quoted or not.
fn parse_value<'a>(
    raw: &'a str,
    number: usize,
    lines: &mut impl Iterator<Item = (usize, &'a str)>,
) -> Result<Zeroizing<String>, DotenvError> {
    let start = raw.trim_start();
    match start.chars().next() {
        Some(quote @ ('"' | '\'')) => {
            parse_quoted(&start[quote.len_utf8()..], quote, number, lines)
        }
        // The comment search looks at `raw`, not `start`, so that in `KEY= #note` the
        // whitespace after `=` still introduces a comment.
        _ => Ok(Zeroizing::new(strip_inline_comment(raw).trim().to_owned())),
    }
}

/// Cuts an unquoted value at the first `#` that follows whitespace.
fn strip_inline_comment(raw: &str) -> &str {
    let mut after_whitespace = false;
    for (at, character) in raw.char_indices() {
        if character == '#' && after_whitespace {
            return &raw[..at];
        }
        after_whitespace = character.is_whitespace();
    }
    raw
}

/// Reads a quoted value whose text after the opening quote on line `start_line` is `first`,
/// continuing onto following lines until the closing quote.
fn parse_quoted<'a>(
    first: &'a str,
    quote: char,
    start_line: usize,
    lines: &mut impl Iterator<Item = (usize, &'a str)>,
) -> Result<Zeroizing<String>, DotenvError> {
    let mut value = Zeroizing::new(String::with_capacity(first.len()));
    let (mut number, mut segment) = (start_line, first);
    loop {
        if let Some(rest) = scan_quoted(segment, quote, &mut value) {
            check_after_quote(rest, number)?;
            return Ok(value);
        }
        (number, segment) =
            lines.next().ok_or(DotenvError::UnterminatedQuote { line: start_line })?;
        value.push('\n');
    }
}

/// Appends the value text of one line to `value`. Returns the text after the closing quote,
/// or `None` when the line ends first.
fn scan_quoted<'a>(segment: &'a str, quote: char, value: &mut String) -> Option<&'a str> {
    if quote == '\'' {
        scan_single_quoted(segment, value)
    } else {
        scan_double_quoted(segment, value)
    }
}

/// Single quotes: everything up to the next `'` is literal.
fn scan_single_quoted<'a>(segment: &'a str, value: &mut String) -> Option<&'a str> {
    match segment.split_once('\'') {
        Some((inside, rest)) => {
            value.push_str(inside);
            Some(rest)
        }
        None => {
            value.push_str(segment);
            None
        }
    }
}

/// Double quotes: backslash escapes are decoded up to the next unescaped `"`.
fn scan_double_quoted<'a>(segment: &'a str, value: &mut String) -> Option<&'a str> {
    let mut characters = segment.char_indices();
    while let Some((at, character)) = characters.next() {
        match character {
            '"' => return Some(&segment[at + 1..]),
            '\\' => match characters.next() {
                Some((_, escaped)) => push_escape(escaped, value),
                // A backslash ending the line escapes nothing; keep it.
                None => value.push('\\'),
            },
            _ => value.push(character),
        }
    }
    None
}

/// Appends the character that `\escaped` stands for.
fn push_escape(escaped: char, value: &mut String) {
    match escaped {
        'n' => value.push('\n'),
        'r' => value.push('\r'),
        't' => value.push('\t'),
        '"' | '\\' => value.push(escaped),
        // Unknown escapes are kept as written: `"C:\Users"` should not lose its backslash.
        _ => {
            value.push('\\');
            value.push(escaped);
        }
    }
}

/// Checks that only whitespace or a comment follows a closing quote on line `number`.
fn check_after_quote(rest: &str, number: usize) -> Result<(), DotenvError> {
    let rest = rest.trim_start();
    if rest.is_empty() || rest.starts_with('#') {
        Ok(())
    } else {
        Err(DotenvError::TextAfterQuote { line: number })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `input` and flattens the entries for comparison.
    fn parsed(input: &str) -> Vec<(String, String, usize)> {
        parse(input)
            .unwrap()
            .into_iter()
            .map(|entry| (entry.key.clone(), entry.value.to_string(), entry.line))
            .collect()
    }

    fn single_value(input: &str) -> String {
        let entries = parsed(input);
        assert_eq!(entries.len(), 1, "{input:?}");
        entries[0].1.clone()
    }

    fn entry(key: &str, value: &str, line: usize) -> (String, String, usize) {
        (key.to_owned(), value.to_owned(), line)
    }

    #[test]
    fn simple_assignments() {
        assert_eq!(parsed("A=1\nB=two\n"), vec![entry("A", "1", 1), entry("B", "two", 2)]);
    }

    #[test]
    fn skips_blank_and_comment_lines() {
        let input = "\n# comment\n   \n  # indented comment\nA=1\n\t\nB=2";
        assert_eq!(parsed(input), vec![entry("A", "1", 5), entry("B", "2", 7)]);
    }

    #[test]
    fn empty_input_has_no_entries() {
        assert!(parse("").unwrap().is_empty());
        assert!(parse("# only a comment\n\n").unwrap().is_empty());
    }

    #[test]
    fn export_prefix_is_removed() {
        assert_eq!(parsed("export A=1"), vec![entry("A", "1", 1)]);
        assert_eq!(parsed("export\tA = 1"), vec![entry("A", "1", 1)]);
    }

    #[test]
    fn variable_named_export_is_kept() {
        assert_eq!(parsed("export=1"), vec![entry("export", "1", 1)]);
        assert_eq!(parsed("export = 1"), vec![entry("export", "1", 1)]);
        assert_eq!(parsed("exported=1"), vec![entry("exported", "1", 1)]);
    }

    #[test]
    fn whitespace_around_equals_and_value_is_trimmed() {
        assert_eq!(parsed("  A  =   some value  \t"), vec![entry("A", "some value", 1)]);
    }

    #[test]
    fn empty_value() {
        assert_eq!(single_value("A="), "");
        assert_eq!(single_value("A=   "), "");
        assert_eq!(single_value("A=\"\""), "");
        assert_eq!(single_value("A=''"), "");
    }

    #[test]
    fn value_may_contain_equals() {
        assert_eq!(single_value("A=b=c=="), "b=c==");
    }

    #[test]
    fn inline_comment_ends_unquoted_value() {
        assert_eq!(single_value("A=value # note"), "value");
        assert_eq!(single_value("A=value\t# note"), "value");
        assert_eq!(single_value("A= # only a note"), "");
    }

    #[test]
    fn hash_without_preceding_space_is_part_of_value() {
        assert_eq!(single_value("A=abc#def"), "abc#def");
        assert_eq!(single_value("A=#def"), "#def");
    }

    #[test]
    fn single_quoted_value_is_literal() {
        assert_eq!(single_value(r#"A='a\nb \"c\" # d'"#), r#"a\nb \"c\" # d"#);
        assert_eq!(single_value("A=  ' padded '  "), " padded ");
    }

    #[test]
    fn double_quoted_escapes() {
        assert_eq!(single_value(r#"A="a\nb\rc\td\"e\\f""#), "a\nb\rc\td\"e\\f");
    }

    #[test]
    fn double_quoted_keeps_unknown_escapes_and_hash() {
        assert_eq!(
            single_value(r#"A="C:\Users\x # not a comment""#),
            r"C:\Users\x # not a comment"
        );
    }

    #[test]
    fn double_quoted_value_spans_lines() {
        let input = "A=\"first\n# not a comment\n  indented\nlast\"\nB=2";
        assert_eq!(
            parsed(input),
            vec![entry("A", "first\n# not a comment\n  indented\nlast", 1), entry("B", "2", 5)]
        );
    }

    #[test]
    fn single_quoted_value_spans_lines() {
        assert_eq!(single_value("A='one\ntwo'"), "one\ntwo");
    }

    #[test]
    fn multi_line_value_with_crlf_uses_lf() {
        assert_eq!(
            parsed("A=\"one\r\ntwo\"\r\nB=3\r\n"),
            vec![entry("A", "one\ntwo", 1), entry("B", "3", 3)]
        );
    }

    #[test]
    fn comment_after_closing_quote_is_allowed() {
        assert_eq!(single_value("A=\"v\"   # note"), "v");
        assert_eq!(single_value("A='v'# note"), "v");
        assert_eq!(single_value("A=\"v\"  \t"), "v");
    }

    #[test]
    fn text_after_closing_quote_is_an_error() {
        assert_eq!(parse("A=1\nB=\"v\"x"), Err(DotenvError::TextAfterQuote { line: 2 }));
        assert_eq!(parse("B='v' x"), Err(DotenvError::TextAfterQuote { line: 1 }));
        // The line named is the one holding the closing quote.
        assert_eq!(parse("B=\"v\nw\"x"), Err(DotenvError::TextAfterQuote { line: 2 }));
    }

    #[test]
    fn unterminated_quote_names_its_first_line() {
        let input = "A=1\nB=\"starts here\nC=2\nD=3\n";
        assert_eq!(parse(input), Err(DotenvError::UnterminatedQuote { line: 2 }));
        assert_eq!(parse("A='open"), Err(DotenvError::UnterminatedQuote { line: 1 }));
        assert_eq!(parse(r#"A="escaped end\""#), Err(DotenvError::UnterminatedQuote { line: 1 }));
    }

    #[test]
    fn line_without_equals_is_an_error() {
        assert_eq!(parse("A=1\n\nJUSTAKEY\n"), Err(DotenvError::MissingEquals { line: 3 }));
        assert_eq!(parse("export A"), Err(DotenvError::MissingEquals { line: 1 }));
    }

    #[test]
    fn empty_key_is_an_error() {
        assert_eq!(parse("=value"), Err(DotenvError::EmptyKey { line: 1 }));
        assert_eq!(parse("  = value"), Err(DotenvError::EmptyKey { line: 1 }));
    }

    #[test]
    fn key_with_whitespace_is_an_error() {
        assert_eq!(parse("MY KEY=1"), Err(DotenvError::KeyWithWhitespace { line: 1 }));
    }

    #[test]
    fn keys_are_returned_as_written() {
        // Name validation is the caller's job.
        assert_eq!(parsed("lower.case-key=1"), vec![entry("lower.case-key", "1", 1)]);
    }

    #[test]
    fn byte_order_mark_is_ignored() {
        assert_eq!(parsed("\u{feff}A=1\nB=2"), vec![entry("A", "1", 1), entry("B", "2", 2)]);
    }

    #[test]
    fn crlf_line_endings() {
        assert_eq!(
            parsed("# c\r\nA=1\r\nB='two'\r\nC=\"3\" # x\r\n"),
            vec![entry("A", "1", 2), entry("B", "two", 3), entry("C", "3", 4)]
        );
    }

    #[test]
    fn duplicates_are_returned_in_order() {
        assert_eq!(
            parsed("A=1\nB=2\nA=3"),
            vec![entry("A", "1", 1), entry("B", "2", 2), entry("A", "3", 3)]
        );
    }

    #[test]
    fn non_ascii_values() {
        assert_eq!(single_value("A=pässwörd ✓"), "pässwörd ✓");
        assert_eq!(single_value("A=\"日本\\n語\""), "日本\n語");
    }

    #[test]
    fn errors_never_quote_the_file() {
        let secret = "hunter2-very-secret";
        for input in [
            secret.to_owned(),
            format!("A=\"{secret}"),
            format!("A='{secret}'{secret}"),
            format!("{secret} {secret}={secret}"),
            format!("={secret}"),
        ] {
            let error = parse(&input).unwrap_err();
            let message = error.to_string();
            assert!(!message.contains("hunter2"), "{message}");
            assert!(!format!("{error:?}").contains("hunter2"));
            assert!(message.starts_with("line 1: "), "{message}");
            assert_eq!(error.line(), 1);
        }
    }

    #[test]
    fn debug_hides_the_value() {
        let entries = parse("TOKEN=hunter2").unwrap();
        let text = format!("{entries:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("TOKEN") && text.contains("[redacted]"), "{text}");
    }
}
