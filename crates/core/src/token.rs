//! Agent tokens: `agt_<ws>_<payload>`, an Ed25519-signed, versioned claim set.
//!
//! `<payload>` is base62 of the claim bytes followed by the 64-byte signature. Claims,
//! version 1: `1u8`, token id (length byte + bytes), agent name (length byte + bytes),
//! issued-at (i64 big-endian seconds), expiry flag byte and, when set, expiry (i64). The
//! signature covers a domain-separation prefix, the workspace id and the claim bytes, so
//! a token relabelled with another workspace id does not verify.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// Every token starts with this.
pub const TOKEN_PREFIX: &str = "agt_";

/// Longer tokens are refused before any decoding work.
pub const MAX_TOKEN_LEN: usize = 512;

const VERSION: u8 = 1;
const SIGNED_PREFIX: &[u8] = b"agentsecrets agent token v1\0";
const BASE62: &str = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// What a token says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    /// `tok_...`.
    pub token_id: String,
    /// The agent's name.
    pub agent: String,
    /// Issue time, Unix seconds.
    pub issued_at: i64,
    /// Expiry, Unix seconds.
    pub expires_at: Option<i64>,
}

/// Why a token was refused. Deliberately vague: callers answer every case alike.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Longer than [`MAX_TOKEN_LEN`].
    #[error("agent token unauthorized: too long")]
    TooLong,
    /// Not a well-formed token.
    #[error("agent token unauthorized: malformed")]
    Malformed,
    /// A claim-set version this build does not know.
    #[error("agent token unauthorized: unsupported version")]
    UnsupportedVersion,
    /// The signature does not verify.
    #[error("agent token unauthorized: bad signature")]
    BadSignature,
    /// Past its expiry.
    #[error("agent token unauthorized: expired")]
    Expired,
}

/// A structurally valid token, not yet verified.
pub struct ParsedToken {
    workspace: String,
    claims: TokenClaims,
    claim_bytes: Vec<u8>,
    signature: Signature,
}

impl std::fmt::Debug for ParsedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParsedToken")
            .field("workspace", &self.workspace)
            .field("token_id", &self.claims.token_id)
            .finish_non_exhaustive()
    }
}

/// Issues a token value. The value is a credential: never log it.
pub fn issue(workspace: &str, claims: &TokenClaims, key: &SigningKey) -> String {
    let claim_bytes = encode_claims(claims);
    let signature = key.sign(&signed_message(workspace, &claim_bytes));
    let mut payload = claim_bytes;
    payload.extend_from_slice(&signature.to_bytes());
    format!("{TOKEN_PREFIX}{workspace}_{}", base_x::encode(BASE62, &payload))
}

/// Parses a token's structure without verifying it.
pub fn parse(token: &str) -> Result<ParsedToken, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLong);
    }
    let rest = token.strip_prefix(TOKEN_PREFIX).ok_or(TokenError::Malformed)?;
    let (workspace, payload) = rest.split_once('_').ok_or(TokenError::Malformed)?;
    let ws_ok = (1..=16).contains(&workspace.len())
        && workspace.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !ws_ok || payload.is_empty() {
        return Err(TokenError::Malformed);
    }
    let bytes = base_x::decode(BASE62, payload).map_err(|_| TokenError::Malformed)?;
    // base62 has no canonical padding: only the exact encoding of these bytes is accepted.
    if base_x::encode(BASE62, &bytes) != payload || bytes.len() < 64 {
        return Err(TokenError::Malformed);
    }
    let (claim_bytes, signature) = bytes.split_at(bytes.len() - 64);
    let signature = Signature::from_slice(signature).map_err(|_| TokenError::Malformed)?;
    let claims = decode_claims(claim_bytes)?;
    Ok(ParsedToken {
        workspace: workspace.to_owned(),
        claims,
        claim_bytes: claim_bytes.to_vec(),
        signature,
    })
}

impl ParsedToken {
    /// The workspace id the token names.
    pub fn workspace(&self) -> &str {
        &self.workspace
    }

    /// The claims.
    pub fn claims(&self) -> &TokenClaims {
        &self.claims
    }

    /// Checks the signature (strict Ed25519), then the expiry against `now`.
    pub fn verify(&self, key: &VerifyingKey, now: i64) -> Result<(), TokenError> {
        let message = signed_message(&self.workspace, &self.claim_bytes);
        key.verify_strict(&message, &self.signature).map_err(|_| TokenError::BadSignature)?;
        if self.claims.expires_at.is_some_and(|at| at <= now) {
            return Err(TokenError::Expired);
        }
        Ok(())
    }
}

/// Full SHA-256 hex of the value: what the registry stores instead of the value.
pub fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// A short public fingerprint for the audit log: `fp_` and 12 hex digits.
pub fn fingerprint(token: &str) -> String {
    format!("fp_{}", &token_hash(token)[..12])
}

/// Whether `raw` has the shape of a token id: `tok_` and 12 of `[a-z2-7]`.
pub fn is_token_id(raw: &str) -> bool {
    raw.strip_prefix("tok_").is_some_and(|id| {
        id.len() == 12 && id.bytes().all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
    })
}

fn signed_message(workspace: &str, claim_bytes: &[u8]) -> Vec<u8> {
    let mut message = SIGNED_PREFIX.to_vec();
    message.extend_from_slice(workspace.as_bytes());
    message.push(0);
    message.extend_from_slice(claim_bytes);
    message
}

fn encode_claims(claims: &TokenClaims) -> Vec<u8> {
    let mut out = vec![VERSION];
    for field in [&claims.token_id, &claims.agent] {
        out.push(field.len() as u8);
        out.extend_from_slice(field.as_bytes());
    }
    out.extend_from_slice(&claims.issued_at.to_be_bytes());
    match claims.expires_at {
        Some(at) => {
            out.push(1);
            out.extend_from_slice(&at.to_be_bytes());
        }
        None => out.push(0),
    }
    out
}

fn decode_claims(bytes: &[u8]) -> Result<TokenClaims, TokenError> {
    let mut reader = Reader(bytes);
    if reader.byte()? != VERSION {
        return Err(TokenError::UnsupportedVersion);
    }
    let token_id = reader.text()?;
    let agent = reader.text()?;
    let issued_at = reader.i64()?;
    let expires_at = match reader.byte()? {
        0 => None,
        1 => Some(reader.i64()?),
        _ => return Err(TokenError::Malformed),
    };
    if !reader.0.is_empty() || !is_token_id(&token_id) || agent.is_empty() {
        return Err(TokenError::Malformed);
    }
    Ok(TokenClaims { token_id, agent, issued_at, expires_at })
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], TokenError> {
        if self.0.len() < n {
            return Err(TokenError::Malformed);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, TokenError> {
        Ok(self.take(1)?[0])
    }

    fn text(&mut self) -> Result<String, TokenError> {
        let len = usize::from(self.byte()?);
        let raw = self.take(len)?;
        String::from_utf8(raw.to_vec()).map_err(|_| TokenError::Malformed)
    }

    fn i64(&mut self) -> Result<i64, TokenError> {
        let raw: [u8; 8] = self.take(8)?.try_into().map_err(|_| TokenError::Malformed)?;
        Ok(i64::from_be_bytes(raw))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
