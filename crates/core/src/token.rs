//! Agent tokens: signed, self-contained credentials that prove which agent is calling.
//!
//! A token looks like `agt_<ws>_<payload>`:
//!
//! - `agt_` is [`TOKEN_PREFIX`], so that a token is recognisable in a leak scan;
//! - `<ws>` is the workspace id, 1 to 16 of `[a-z0-9]` (so it never contains `_`);
//! - `<payload>` is base62 (alphabet `0-9A-Za-z`, most significant digit first) of the
//!   claim bytes followed by the 64-byte Ed25519 signature.
//!
//! Verification needs only the workspace's public key: no network, no store. Whether the
//! token has been revoked is a separate question that the caller answers from the store,
//! keyed by [`token_hash`].
//!
//! # Claim bytes, version 1
//!
//! | bytes | field                                                                 |
//! |-------|-----------------------------------------------------------------------|
//! | 1     | version, `0x01`                                                       |
//! | 1     | length `n` of the token id (16 in version 1)                          |
//! | n     | token id, ASCII: `tok_` and 12 of `[a-z2-7]` (see [`is_token_id`])    |
//! | 1     | length `m` of the agent name, 1 to 64                                 |
//! | m     | agent name, ASCII `[A-Za-z0-9._-]`, starting with a letter or digit   |
//! | 8     | `issued_at`, unix seconds, `i64` big-endian                           |
//! | 1     | expiry flag: `0x00` no expiry, `0x01` an `expires_at` follows         |
//! | 0 / 8 | `expires_at`, unix seconds, `i64` big-endian, only when the flag is 1 |
//!
//! The signature follows the claims directly and ends the payload: a payload with any byte
//! left over, a field that breaks its rule or another flag value is malformed. Because the
//! claims start with a non-zero version byte, the base62 text of a valid payload never
//! starts with `0`, and each payload has exactly one spelling: changing any character of a
//! token changes the bytes that are checked.
//!
//! # Signature
//!
//! The Ed25519 signature (checked with `verify_strict`) covers
//!
//! ```text
//! "agentsecrets agent token v1\0" || workspace id || "\0" || claim bytes
//! ```
//!
//! The domain prefix keeps a workspace key's signatures on anything else from ever passing
//! as a token; the workspace id binds the token to its workspace, so a token relabelled
//! with another workspace id fails verification even where two workspaces shared a key.
//!
//! # Handling the value
//!
//! A token value is a bearer secret: whoever holds it acts as the agent. It must never be
//! logged or put into an error message. The store keeps [`token_hash`], the audit log shows
//! [`fingerprint`]. Nothing here echoes its input: [`TokenError`] carries no text from the
//! token and [`ParsedToken`]'s `Debug` shows only the workspace and the token id.

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::names::MAX_AGENT_LEN;

/// The fixed start of every agent token value.
pub const TOKEN_PREFIX: &str = "agt_";

/// Longest token value [`parse`] looks at, in bytes. A valid token is at most 242 bytes;
/// anything over this limit is refused before base62 decoding, whose cost grows with the
/// square of the length.
pub const MAX_TOKEN_LEN: usize = 512;

/// Version byte of the claim encoding described in the module documentation.
const CLAIMS_VERSION: u8 = 1;

/// Domain separation for the signed message; see the module documentation.
const SIGNATURE_DOMAIN: &[u8] = b"agentsecrets agent token v1\0";

const BASE62: &str = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

const MAX_WORKSPACE_LEN: usize = 16;

const TOKEN_ID_PREFIX: &str = "tok_";

/// Random characters after `tok_` in a token id: 12 base32 characters, 60 bits.
const TOKEN_ID_RANDOM_LEN: usize = 12;

/// Hex digits of the SHA-256 shown in a fingerprint: 48 bits, enough to tell tokens apart
/// in a log, far too few to help anyone guess a value.
const FINGERPRINT_HEX_LEN: usize = 12;

/// What a token asserts about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    /// The token's id, `tok_` and 12 of `[a-z2-7]`; the store's key for revocation.
    pub token_id: String,
    /// The agent the token was issued to, 1 to 64 of `[A-Za-z0-9._-]`.
    pub agent: String,
    /// When the token was issued, unix seconds.
    pub issued_at: i64,
    /// When the token stops being valid, unix seconds; `None` for a token that never expires.
    pub expires_at: Option<i64>,
}

/// Why a token was refused.
///
/// Every message reads as an authorization failure and none quotes the token, so the error
/// can be shown to the caller and logged as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The value is longer than [`MAX_TOKEN_LEN`]; it was not decoded.
    #[error("unauthorized: agent token is too long")]
    TooLong,
    /// The value does not have the shape of an agent token.
    #[error("unauthorized: agent token is malformed")]
    Malformed,
    /// The claims carry a version this build does not know.
    #[error("unauthorized: agent token version is not supported")]
    UnsupportedVersion,
    /// The signature does not verify under the workspace key.
    #[error("unauthorized: agent token signature is not valid")]
    BadSignature,
    /// The token's expiry has passed.
    #[error("unauthorized: agent token has expired")]
    Expired,
}

/// Issues a token value for `claims` in `workspace`, signed with the workspace key.
///
/// The value is a secret: show it once to whoever asked for it and never log it; keep only
/// [`token_hash`] of it.
///
/// # Panics
///
/// If `workspace` is not a valid workspace id (see [`is_workspace_id`]) or a claim breaks
/// its rule (see [`TokenClaims`]). Both come from records the caller has already validated,
/// and a token that [`parse`] would refuse must never be handed out.
pub fn issue(workspace: &str, claims: &TokenClaims, key: &SigningKey) -> String {
    assert!(is_workspace_id(workspace), "agent token issued for an invalid workspace id");
    let mut payload = encode_claims(claims);
    let signature = key.sign(&signed_message(workspace, &payload));
    payload.extend_from_slice(&signature.to_bytes());
    let encoded = base_x::encode(BASE62, &payload);
    format!("{TOKEN_PREFIX}{workspace}_{encoded}")
}

/// Parses a token's structure without checking its signature: prefix, workspace id, base62
/// payload, every claim and the signature length, with no byte left over.
///
/// The result can be trusted only after [`ParsedToken::verify`].
pub fn parse(token: &str) -> Result<ParsedToken, TokenError> {
    // First, so that no amount of input makes us do more than a bounded amount of work.
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLong);
    }
    let rest = token.strip_prefix(TOKEN_PREFIX).ok_or(TokenError::Malformed)?;
    let (workspace, payload) = rest.split_once('_').ok_or(TokenError::Malformed)?;
    if !is_workspace_id(workspace)
        || payload.is_empty()
        || !payload.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(TokenError::Malformed);
    }
    let bytes = base_x::decode(BASE62, payload).map_err(|_| TokenError::Malformed)?;
    let (claims, claims_len) = decode_claims(&bytes)?;
    let (claim_bytes, signature) = bytes.split_at(claims_len);
    let signature: &[u8; ed25519_dalek::SIGNATURE_LENGTH] =
        signature.try_into().map_err(|_| TokenError::Malformed)?;
    Ok(ParsedToken {
        workspace: workspace.to_owned(),
        claims,
        message: signed_message(workspace, claim_bytes),
        signature: Signature::from_bytes(signature),
    })
}

/// A token whose structure is valid, not yet verified.
///
/// It does not keep the token value, and its `Debug` shows only the workspace id and the
/// token id.
#[derive(Clone)]
pub struct ParsedToken {
    workspace: String,
    claims: TokenClaims,
    /// The exact bytes the signature must cover, built once at parse time.
    message: Vec<u8>,
    signature: Signature,
}

impl ParsedToken {
    /// The workspace id the token names. Pick the verifying key by it, then [`verify`].
    ///
    /// [`verify`]: ParsedToken::verify
    pub fn workspace(&self) -> &str {
        &self.workspace
    }

    /// The claims, as the token states them; trust them only after a successful `verify`.
    pub fn claims(&self) -> &TokenClaims {
        &self.claims
    }

    /// Verifies the signature with `verify_strict` under the workspace's key, then the expiry
    /// against `now` (unix seconds). A token is expired from its `expires_at` second on.
    ///
    /// The signature is checked first so that an expiry error is only ever reported for a
    /// token that is genuine.
    pub fn verify(&self, key: &VerifyingKey, now: i64) -> Result<(), TokenError> {
        key.verify_strict(&self.message, &self.signature).map_err(|_| TokenError::BadSignature)?;
        match self.claims.expires_at {
            Some(expires_at) if now >= expires_at => Err(TokenError::Expired),
            _ => Ok(()),
        }
    }
}

impl fmt::Debug for ParsedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The signature is what makes the value a secret: leave it, and the message, out.
        f.debug_struct("ParsedToken")
            .field("workspace", &self.workspace)
            .field("token_id", &self.claims.token_id)
            .finish_non_exhaustive()
    }
}

/// Full SHA-256 of the token value, in lowercase hex: what the store keeps instead of the
/// value, and the key to look a presented token up by.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Short public fingerprint for the audit log: `fp_` and the first 12 hex digits of the
/// value's SHA-256.
pub fn fingerprint(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    format!("fp_{}", hex::encode(&digest[..FINGERPRINT_HEX_LEN / 2]))
}

/// Whether `raw` has the shape of a token id: `tok_` and 12 of `[a-z2-7]`.
pub fn is_token_id(raw: &str) -> bool {
    raw.strip_prefix(TOKEN_ID_PREFIX).is_some_and(|random| {
        random.len() == TOKEN_ID_RANDOM_LEN
            && random.bytes().all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7'))
    })
}

/// Whether `raw` has the shape of a workspace id: 1 to 16 of `[a-z0-9]`.
pub fn is_workspace_id(raw: &str) -> bool {
    (1..=MAX_WORKSPACE_LEN).contains(&raw.len())
        && raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// The agent name rule of [`crate::names::AgentName`], on bytes: kept here so that parsing
/// a token does not build the error a failed `AgentName::parse` carries.
fn is_agent_name(raw: &[u8]) -> bool {
    match raw.split_first() {
        Some((first, rest)) => {
            raw.len() <= MAX_AGENT_LEN
                && first.is_ascii_alphanumeric()
                && rest.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        }
        None => false,
    }
}

fn signed_message(workspace: &str, claim_bytes: &[u8]) -> Vec<u8> {
    let mut message =
        Vec::with_capacity(SIGNATURE_DOMAIN.len() + workspace.len() + 1 + claim_bytes.len());
    message.extend_from_slice(SIGNATURE_DOMAIN);
    message.extend_from_slice(workspace.as_bytes());
    message.push(0);
    message.extend_from_slice(claim_bytes);
    message
}

fn encode_claims(claims: &TokenClaims) -> Vec<u8> {
    assert!(is_token_id(&claims.token_id), "agent token issued with an invalid token id");
    assert!(is_agent_name(claims.agent.as_bytes()), "agent token issued for an invalid agent");
    let mut out = Vec::with_capacity(2 + claims.token_id.len() + 1 + claims.agent.len() + 17);
    out.push(CLAIMS_VERSION);
    for text in [&claims.token_id, &claims.agent] {
        // Both lengths were bounded by the checks above (16 and at most 64).
        out.push(u8::try_from(text.len()).expect("claim text checked to be short"));
        out.extend_from_slice(text.as_bytes());
    }
    out.extend_from_slice(&claims.issued_at.to_be_bytes());
    match claims.expires_at {
        None => out.push(0),
        Some(expires_at) => {
            out.push(1);
            out.extend_from_slice(&expires_at.to_be_bytes());
        }
    }
    out
}

/// Decodes the claims at the start of `bytes`; returns them and how many bytes they took.
fn decode_claims(bytes: &[u8]) -> Result<(TokenClaims, usize), TokenError> {
    let mut rest = bytes;
    if take_u8(&mut rest)? != CLAIMS_VERSION {
        return Err(TokenError::UnsupportedVersion);
    }
    let token_id = take_text(&mut rest)?;
    let agent = take_text(&mut rest)?;
    if !is_token_id(token_id) || !is_agent_name(agent.as_bytes()) {
        return Err(TokenError::Malformed);
    }
    let issued_at = take_i64(&mut rest)?;
    let expires_at = match take_u8(&mut rest)? {
        0 => None,
        1 => Some(take_i64(&mut rest)?),
        _ => return Err(TokenError::Malformed),
    };
    let claims = TokenClaims {
        token_id: token_id.to_owned(),
        agent: agent.to_owned(),
        issued_at,
        expires_at,
    };
    Ok((claims, bytes.len() - rest.len()))
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], TokenError> {
    let (head, tail) = rest.split_at_checked(n).ok_or(TokenError::Malformed)?;
    *rest = tail;
    Ok(head)
}

fn take_u8(rest: &mut &[u8]) -> Result<u8, TokenError> {
    Ok(take(rest, 1)?[0])
}

fn take_i64(rest: &mut &[u8]) -> Result<i64, TokenError> {
    let raw: [u8; 8] = take(rest, 8)?.try_into().map_err(|_| TokenError::Malformed)?;
    Ok(i64::from_be_bytes(raw))
}

/// A length-prefixed text field. Its shape is checked by the caller.
fn take_text<'a>(rest: &mut &'a [u8]) -> Result<&'a str, TokenError> {
    let len = take_u8(rest)?;
    std::str::from_utf8(take(rest, usize::from(len))?).map_err(|_| TokenError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::AgentName;
    use proptest::prelude::*;

    const WS: &str = "acme42";
    const NOW: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn claims(expires_at: Option<i64>) -> TokenClaims {
        TokenClaims {
            token_id: "tok_abcdefgh2345".to_owned(),
            agent: "billing-tool".to_owned(),
            issued_at: NOW - 60,
            expires_at,
        }
    }

    fn check(token: &str, key: &SigningKey, now: i64) -> Result<TokenClaims, TokenError> {
        let parsed = parse(token)?;
        parsed.verify(&key.verifying_key(), now)?;
        Ok(parsed.claims().clone())
    }

    /// The `<payload>` part of a token and the byte offset where it starts.
    fn payload_of(token: &str) -> (usize, &str) {
        let start = TOKEN_PREFIX.len() + token[TOKEN_PREFIX.len()..].find('_').unwrap() + 1;
        (start, &token[start..])
    }

    fn with_payload_bytes(workspace: &str, bytes: &[u8]) -> String {
        format!("{TOKEN_PREFIX}{workspace}_{}", base_x::encode(BASE62, bytes))
    }

    /// Claim bytes plus a valid signature over them, for hand-built payloads.
    fn signed_payload(claim_bytes: &[u8]) -> Vec<u8> {
        let signature = key(1).sign(&signed_message(WS, claim_bytes));
        let mut out = claim_bytes.to_vec();
        out.extend_from_slice(&signature.to_bytes());
        out
    }

    #[test]
    fn round_trip_without_expiry() {
        let claims = claims(None);
        let token = issue(WS, &claims, &key(1));
        assert!(token.starts_with("agt_acme42_"));
        let parsed = parse(&token).unwrap();
        assert_eq!(parsed.workspace(), WS);
        assert_eq!(parsed.claims(), &claims);
        assert_eq!(parsed.verify(&key(1).verifying_key(), i64::MAX), Ok(()));
    }

    #[test]
    fn round_trip_with_expiry_and_extreme_times() {
        for (issued_at, expires_at) in [(NOW, NOW + 3600), (i64::MIN, i64::MAX), (-1, 0)] {
            let claims = TokenClaims { issued_at, expires_at: Some(expires_at), ..claims(None) };
            let token = issue(WS, &claims, &key(1));
            assert_eq!(check(&token, &key(1), expires_at - 1), Ok(claims));
        }
    }

    #[test]
    fn known_answer_pins_the_format() {
        // Ed25519 signatures are deterministic, so the whole value is fixed by its inputs.
        // If this changes, tokens already issued stop verifying: bump the version instead.
        let token = issue(WS, &claims(Some(NOW + 86_400)), &key(1));
        assert_eq!(token, KNOWN_TOKEN);
        assert_eq!(token_hash(&token).len(), 64);
    }

    const KNOWN_TOKEN: &str = concat!(
        "agt_acme42_1ssEU26tuCnpuFaDynDSu0mUfWUlcsGopiPRfV46lzHt8eCgx74gNbTVztlMvAp8OiKUD",
        "DPaPa23OyESBuGW7upz1zcWyh1fYcVlor0hKgyYmpTBXrVpuOnS2Ukf62TTnbiuMt1khv4bb7xm1HhxK",
        "n",
    );

    #[test]
    fn expired_from_the_expiry_second_on() {
        let token = issue(WS, &claims(Some(NOW)), &key(1));
        assert!(check(&token, &key(1), NOW - 1).is_ok());
        assert_eq!(check(&token, &key(1), NOW), Err(TokenError::Expired));
        assert_eq!(check(&token, &key(1), NOW + 1), Err(TokenError::Expired));
    }

    #[test]
    fn expired_token_under_the_wrong_key_is_a_bad_signature() {
        let token = issue(WS, &claims(Some(NOW)), &key(1));
        assert_eq!(check(&token, &key(2), NOW + 1), Err(TokenError::BadSignature));
    }

    #[test]
    fn wrong_key_fails() {
        let token = issue(WS, &claims(None), &key(1));
        assert_eq!(check(&token, &key(2), NOW), Err(TokenError::BadSignature));
    }

    #[test]
    fn every_changed_character_fails() {
        let token = issue(WS, &claims(Some(NOW + 60)), &key(1));
        let alphabet: Vec<char> = BASE62.chars().chain(['_', '-', ' ', 'é']).collect();
        for pos in 0..token.len() {
            let original = token.as_bytes()[pos] as char;
            // Three replacements per position keep the test fast in debug builds while still
            // covering neighbours, a far digit and a non-alphabet character.
            let picks = [(pos + 1) % 62, (pos + 31) % 62, 62 + pos % 4];
            for replacement in picks.map(|i| alphabet[i]) {
                if replacement == original {
                    continue;
                }
                let mut mutated = token[..pos].to_owned();
                mutated.push(replacement);
                mutated.push_str(&token[pos + 1..]);
                assert!(check(&mutated, &key(1), NOW).is_err(), "accepted change at {pos}");
            }
        }
    }

    #[test]
    fn truncated_tokens_fail() {
        let token = issue(WS, &claims(None), &key(1));
        for len in 0..token.len() {
            assert!(check(&token[..len], &key(1), NOW).is_err(), "accepted a cut at {len}");
        }
        // Cutting from the front breaks the prefix.
        assert_eq!(parse(&token[1..]).unwrap_err(), TokenError::Malformed);
    }

    #[test]
    fn padded_tokens_fail() {
        let token = issue(WS, &claims(None), &key(1));
        let (start, payload) = payload_of(&token);
        let padded = [
            format!("{token}0"),
            format!("{token}A"),
            format!("{token}{}", &payload[..10]),
            format!("{token}="),
            format!("{token} "),
            format!("{token}\n"),
            format!("{token}_"),
            format!(" {token}"),
            format!("{}0{payload}", &token[..start]),
        ];
        for value in &padded {
            assert!(check(value, &key(1), NOW).is_err(), "accepted {} bytes", value.len());
        }
        for value in &padded[3..8] {
            assert_eq!(parse(value).unwrap_err(), TokenError::Malformed);
        }
        // A leading '0' decodes to a leading zero byte, which is not version 1.
        assert_eq!(parse(&padded[8]).unwrap_err(), TokenError::UnsupportedVersion);
    }

    #[test]
    fn extra_bytes_after_the_signature_are_malformed() {
        let mut bytes = signed_payload(&encode_claims(&claims(None)));
        bytes.push(0);
        assert_eq!(parse(&with_payload_bytes(WS, &bytes)).unwrap_err(), TokenError::Malformed);
    }

    #[test]
    fn short_signature_is_malformed() {
        let mut bytes = signed_payload(&encode_claims(&claims(None)));
        bytes.pop();
        assert_eq!(parse(&with_payload_bytes(WS, &bytes)).unwrap_err(), TokenError::Malformed);
    }

    #[test]
    fn bad_fields_inside_the_claims_are_malformed() {
        let good = encode_claims(&claims(None));
        let flag_at = good.len() - 1;
        let mut bad_flag = good.clone();
        bad_flag[flag_at] = 2;
        let mut bad_token_id = good.clone();
        bad_token_id[2 + 4] = b'1'; // '1' is not in the base32 alphabet
        let mut bad_agent = good.clone();
        bad_agent[2 + 16 + 1] = b'-'; // agent names start with a letter or digit
        let mut bad_len = good.clone();
        bad_len[1] = 200;
        let mut empty_agent = good[..2 + 16].to_vec();
        empty_agent.push(0);
        empty_agent.extend_from_slice(&good[2 + 16 + 1 + "billing-tool".len()..]);
        for claim_bytes in [bad_flag, bad_token_id, bad_agent, bad_len, empty_agent] {
            let token = with_payload_bytes(WS, &signed_payload(&claim_bytes));
            assert_eq!(parse(&token).unwrap_err(), TokenError::Malformed);
        }
        // The same hand-built path accepts the unchanged claims, so the failures above are
        // the changed fields.
        let token = with_payload_bytes(WS, &signed_payload(&good));
        assert_eq!(check(&token, &key(1), NOW), Ok(claims(None)));
    }

    #[test]
    fn unknown_version_is_reported_as_such() {
        let mut claim_bytes = encode_claims(&claims(None));
        claim_bytes[0] = 2;
        let token = with_payload_bytes(WS, &signed_payload(&claim_bytes));
        assert_eq!(parse(&token).unwrap_err(), TokenError::UnsupportedVersion);
    }

    #[test]
    fn wrong_prefix_fails() {
        let token = issue(WS, &claims(None), &key(1));
        let rest = &token[TOKEN_PREFIX.len()..];
        for prefix in ["", "AGT_", "agx_", "agt-", "agt", "Bearer agt_", "tok_"] {
            let value = format!("{prefix}{rest}");
            assert_eq!(parse(&value).unwrap_err(), TokenError::Malformed, "prefix {prefix:?}");
        }
    }

    #[test]
    fn foreign_workspace_id_fails_verification() {
        let token = issue(WS, &claims(None), &key(1));
        for other in ["acme43", "a", "0123456789abcdef"] {
            let relabelled = token.replacen(WS, other, 1);
            let parsed = parse(&relabelled).unwrap();
            assert_eq!(parsed.workspace(), other);
            assert_eq!(parsed.verify(&key(1).verifying_key(), NOW), Err(TokenError::BadSignature));
        }
    }

    #[test]
    fn workspace_id_shape_is_enforced() {
        let token = issue(WS, &claims(None), &key(1));
        for bad in ["ACME42", "Acme42", "", "acme-42", "0123456789abcdefg", "acme 42", "ácme"] {
            let relabelled = token.replacen(WS, bad, 1);
            assert_eq!(parse(&relabelled).unwrap_err(), TokenError::Malformed, "ws {bad:?}");
        }
    }

    #[test]
    fn over_long_values_are_refused_before_decoding() {
        // A valid prefix and payload alphabet, so only the length can be the reason.
        let long = format!("agt_{WS}_{}", "z".repeat(MAX_TOKEN_LEN));
        assert_eq!(parse(&long).unwrap_err(), TokenError::TooLong);
        // Bytes are what is counted: 200 two-byte characters are over the limit.
        assert_eq!(parse(&"é".repeat(257)).unwrap_err(), TokenError::TooLong);
        let at_limit = format!("agt_{WS}_{}", "z".repeat(MAX_TOKEN_LEN - 11));
        assert_eq!(at_limit.len(), MAX_TOKEN_LEN);
        assert_ne!(parse(&at_limit).unwrap_err(), TokenError::TooLong);
    }

    #[test]
    fn longest_valid_token_fits_the_limit() {
        let claims = TokenClaims {
            token_id: "tok_zzzzzzzzzzzz".to_owned(),
            agent: "z".repeat(MAX_AGENT_LEN),
            issued_at: i64::MAX,
            expires_at: Some(i64::MAX),
        };
        let token = issue("zzzzzzzzzzzzzzzz", &claims, &key(1));
        // 164 payload bytes take at most 221 base62 digits, after the 21 of `agt_<ws>_`.
        assert!(token.len() <= 242, "longest token is {} bytes", token.len());
        assert_eq!(check(&token, &key(1), 0), Ok(claims));
    }

    #[test]
    fn debug_does_not_show_the_token() {
        let token = issue(WS, &claims(None), &key(1));
        let parsed = parse(&token).unwrap();
        let shown = format!("{parsed:?}");
        assert!(shown.contains(WS) && shown.contains("tok_abcdefgh2345"), "{shown}");
        let (_, payload) = payload_of(&token);
        for window in payload.as_bytes().windows(6) {
            assert!(!shown.contains(std::str::from_utf8(window).unwrap()), "{shown}");
        }
        // Neither the signature nor the signed bytes, in any rendering.
        assert!(!shown.contains("signature") && !shown.contains("message"), "{shown}");
    }

    #[test]
    fn errors_read_as_unauthorized_and_quote_nothing() {
        let token = issue(WS, &claims(None), &key(1));
        let (_, payload) = payload_of(&token);
        let all = [
            TokenError::TooLong,
            TokenError::Malformed,
            TokenError::UnsupportedVersion,
            TokenError::BadSignature,
            TokenError::Expired,
        ];
        for err in all {
            let text = err.to_string();
            assert!(text.starts_with("unauthorized: agent token "), "{text}");
            assert!(!text.contains(&payload[..6]) && !text.contains(WS), "{text}");
        }
    }

    #[test]
    fn hash_and_fingerprint() {
        // SHA-256("abc") from FIPS 180-2.
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(token_hash("abc"), abc);
        assert_eq!(fingerprint("abc"), "fp_ba7816bf8f01");
        let token = issue(WS, &claims(None), &key(1));
        assert_eq!(fingerprint(&token), format!("fp_{}", &token_hash(&token)[..12]));
        assert!(!token_hash(&token).contains(&token[12..20]));
    }

    #[test]
    fn token_id_shape() {
        for good in ["tok_abcdefgh2345", "tok_aaaaaaaaaaaa", "tok_777777777777"] {
            assert!(is_token_id(good), "{good}");
        }
        for bad in [
            "",
            "tok_",
            "tok_abcdefgh234",
            "tok_abcdefgh23456",
            "tok_abcdefgh2341",
            "tok_abcdefgh2348",
            "tok_ABCDEFGH2345",
            "TOK_abcdefgh2345",
            "tk_abcdefgh23456",
            "tok-abcdefgh2345",
            "tok_abcdefgh234é",
        ] {
            assert!(!is_token_id(bad), "{bad}");
        }
    }

    #[test]
    fn agent_rule_matches_agent_name() {
        let long = "a".repeat(MAX_AGENT_LEN);
        let too_long = "a".repeat(MAX_AGENT_LEN + 1);
        let samples = [
            "billing-tool",
            "a",
            "agent.v2_x",
            "9lives",
            long.as_str(),
            too_long.as_str(),
            "",
            "-lead",
            ".hidden",
            "_x",
            "has space",
            "tab\t",
            "ünï",
            "a/b",
        ];
        for sample in samples {
            assert_eq!(
                is_agent_name(sample.as_bytes()),
                AgentName::parse(sample).is_ok(),
                "{sample:?}"
            );
        }
    }

    #[test]
    #[should_panic(expected = "invalid workspace id")]
    fn issuing_for_a_bad_workspace_panics() {
        issue("Acme", &claims(None), &key(1));
    }

    #[test]
    #[should_panic(expected = "invalid agent")]
    fn issuing_for_a_bad_agent_panics() {
        issue(WS, &TokenClaims { agent: "a".repeat(65), ..claims(None) }, &key(1));
    }

    fn claims_strategy() -> impl Strategy<Value = TokenClaims> {
        (
            "tok_[a-z2-7]{12}",
            "[A-Za-z0-9][A-Za-z0-9._-]{0,63}",
            any::<i64>(),
            proptest::option::of(any::<i64>()),
        )
            .prop_map(|(token_id, agent, issued_at, expires_at)| TokenClaims {
                token_id,
                agent,
                issued_at,
                expires_at,
            })
    }

    /// Replacement characters: mostly the payload alphabet, where a change still decodes,
    /// plus separators and anything else.
    fn replacement_strategy() -> impl Strategy<Value = char> {
        prop_oneof![
            8 => proptest::sample::select(BASE62.chars().collect::<Vec<_>>()),
            1 => proptest::sample::select(vec!['_', 'a', '0', 'z', 'Z']),
            1 => any::<char>(),
        ]
    }

    proptest! {
        #[test]
        fn parse_never_panics(raw in any::<String>()) {
            let _ = parse(&raw);
        }

        #[test]
        fn parse_never_panics_on_prefixed_input(rest in any::<String>()) {
            let _ = parse(&format!("{TOKEN_PREFIX}{rest}"));
        }

        #[test]
        fn parse_never_panics_on_token_shaped_input(
            ws in "[a-z0-9]{1,16}",
            payload in "[0-9A-Za-z]{0,500}",
        ) {
            let _ = parse(&format!("{TOKEN_PREFIX}{ws}_{payload}"));
        }

        #[test]
        fn parse_never_panics_on_arbitrary_claim_bytes(
            tail in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut bytes = vec![CLAIMS_VERSION];
            bytes.extend_from_slice(&tail);
            let _ = parse(&with_payload_bytes(WS, &bytes));
        }
    }

    proptest! {
        // Each case signs and verifies, which is slow in debug builds: fewer cases.
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        #[test]
        fn issued_tokens_round_trip(
            seed in any::<[u8; 32]>(),
            ws in "[a-z0-9]{1,16}",
            claims in claims_strategy(),
        ) {
            let key = SigningKey::from_bytes(&seed);
            let token = issue(&ws, &claims, &key);
            prop_assert!(token.len() <= MAX_TOKEN_LEN);
            let parsed = parse(&token).unwrap();
            prop_assert_eq!(parsed.workspace(), ws.as_str());
            prop_assert_eq!(parsed.claims(), &claims);
            // One second before expiry; a token that expires at i64::MIN never had one.
            let now = claims.expires_at.map_or(0, |e| e.saturating_sub(1));
            let expected = match claims.expires_at {
                Some(i64::MIN) => Err(TokenError::Expired),
                _ => Ok(()),
            };
            prop_assert_eq!(parsed.verify(&key.verifying_key(), now), expected);
        }

        #[test]
        fn a_mutated_token_never_verifies(
            seed in any::<[u8; 32]>(),
            claims in claims_strategy(),
            pos in any::<proptest::sample::Index>(),
            replacement in replacement_strategy(),
        ) {
            let key = SigningKey::from_bytes(&seed);
            let claims = TokenClaims { expires_at: None, ..claims };
            let token = issue(WS, &claims, &key);
            // Tokens are ASCII, so a byte index is a character boundary.
            let pos = pos.index(token.len());
            let mut mutated = token[..pos].to_owned();
            mutated.push(replacement);
            mutated.push_str(&token[pos + 1..]);
            prop_assume!(mutated != token);
            prop_assert!(check(&mutated, &key, 0).is_err());
        }

        #[test]
        fn another_key_never_verifies(
            seed in any::<[u8; 32]>(),
            other in any::<[u8; 32]>(),
            claims in claims_strategy(),
        ) {
            prop_assume!(seed != other);
            let key = SigningKey::from_bytes(&seed);
            let token = issue(WS, &claims, &SigningKey::from_bytes(&other));
            let parsed = parse(&token).unwrap();
            let now = claims.expires_at.map_or(0, |e| e.saturating_sub(1));
            prop_assert_eq!(
                parsed.verify(&key.verifying_key(), now),
                Err(TokenError::BadSignature)
            );
        }
    }
}
