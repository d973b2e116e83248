//! Names chosen by users and agents (`agentsecrets_core::names`), and the small parsers of
//! CLI and header words: session ids, rates, contract modes, identity levels, call statuses.
//!
//! Each name parser is checked against an oracle written from its documented rule: it
//! accepts exactly the strings the rule allows and keeps them unchanged. `escape_for_display`
//! must never let a control character or non-ASCII character through and stays short.
#![no_main]

use agentsecrets_core::audit::CallStatus;
use agentsecrets_core::identity::IdentityLevel;
use agentsecrets_core::names::{
    AgentName, ProjectName, SecretKey, escape_for_display, is_valid_session_id,
};
use agentsecrets_core::policy::{ContractMode, parse_rate};
use libfuzzer_sys::fuzz_target;

fn label_rule(raw: &str, max: usize) -> bool {
    let bytes = raw.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= max
        && bytes[0].is_ascii_alphanumeric()
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(b))
}

fn key_rule(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphabetic() || bytes[0] == b'_')
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

fuzz_target!(|raw: &str| {
    match AgentName::parse(raw) {
        Ok(name) => {
            assert!(label_rule(raw, 64), "agent name accepted against the rule");
            assert_eq!(name.as_str(), raw);
            assert_eq!(name.to_string(), raw);
        }
        Err(err) => {
            assert!(!label_rule(raw, 64), "valid agent name refused");
            check_message(&err.to_string());
        }
    }
    match ProjectName::parse(raw) {
        Ok(name) => {
            assert!(label_rule(raw, 64), "project name accepted against the rule");
            assert_eq!(name.as_str(), raw);
        }
        Err(err) => {
            assert!(!label_rule(raw, 64), "valid project name refused");
            check_message(&err.to_string());
        }
    }
    match SecretKey::parse(raw) {
        Ok(key) => {
            assert!(key_rule(raw), "secret key accepted against the rule");
            assert_eq!(key.as_str(), raw);
        }
        Err(err) => {
            assert!(!key_rule(raw), "valid secret key refused");
            check_message(&err.to_string());
        }
    }

    // Session ids: 1 to 128 bytes, every one printable ASCII other than space.
    let session_rule =
        !raw.is_empty() && raw.len() <= 128 && raw.bytes().all(|b| (b'!'..=b'~').contains(&b));
    assert_eq!(is_valid_session_id(raw), session_rule, "session id rule");

    let shown = escape_for_display(raw);
    assert!(shown.starts_with('\'') && shown.ends_with('\''));
    assert!(
        shown.bytes().all(|b| b.is_ascii() && !b.is_ascii_control()),
        "escape let a control through"
    );
    // 64 characters, each at most `\u{10ffff}` (10 bytes), plus `...` and the quotes.
    assert!(shown.len() <= 64 * 10 + 5);

    if let Ok(rate) = parse_rate(raw) {
        assert!(rate >= 1);
    }
    if let Some(mode) = ContractMode::parse(raw) {
        assert!(mode.as_str().eq_ignore_ascii_case(raw));
        assert_eq!(ContractMode::parse(mode.as_str()), Some(mode));
    }
    if let Some(level) = IdentityLevel::parse(raw) {
        assert_eq!(IdentityLevel::parse(level.as_str()), Some(level));
    }
    if let Some(status) = CallStatus::parse(raw) {
        assert_eq!(CallStatus::parse(status.as_str()), Some(status));
    }
});

/// Error messages quote the input only escaped.
fn check_message(message: &str) {
    assert!(!message.chars().any(char::is_control), "an error message holds a control character");
}
