//! Agent tokens (`agentsecrets_core::token`).
//!
//! Two kinds of input:
//! - `Raw`: any text is parsed; whatever parses must still fail verification under a fixed
//!   workspace key, because nothing here was signed by it (and `fingerprint`/`token_hash`
//!   must not panic on it);
//! - `Issued`: claims built from the fuzz input are issued with the fixed key. The token must
//!   fit `MAX_TOKEN_LEN`, parse back to the same workspace and claims, verify (or report
//!   `Expired` exactly when `now >= expires_at`), fail under another key, and, since every
//!   token has exactly one spelling, stop verifying when any one character is changed.
#![no_main]

use agentsecrets_core::token::{self, MAX_TOKEN_LEN, TokenClaims, TokenError};
use arbitrary::Arbitrary;
use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Input {
    Raw(String, i64),
    Issued {
        workspace: Vec<u8>,
        id: [u8; 12],
        agent: Vec<u8>,
        issued_at: i64,
        expires_at: Option<i64>,
        now: i64,
        mutate_at: u16,
        mutate_to: u8,
    },
}

const WORKSPACE_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const ID_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
const AGENT_FIRST: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const AGENT_REST: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-";

fn map(bytes: impl IntoIterator<Item = u8>, alphabet: &[u8]) -> String {
    bytes.into_iter().map(|b| char::from(alphabet[usize::from(b) % alphabet.len()])).collect()
}

fuzz_target!(|input: Input| {
    let key = SigningKey::from_bytes(&[7; 32]);
    let other = SigningKey::from_bytes(&[8; 32]);
    match input {
        Input::Raw(text, now) => {
            let _ = token::fingerprint(&text);
            let _ = token::token_hash(&text);
            match token::parse(&text) {
                Ok(parsed) => {
                    assert!(text.len() <= MAX_TOKEN_LEN);
                    assert!(token::is_workspace_id(parsed.workspace()));
                    assert!(token::is_token_id(&parsed.claims().token_id));
                    let _ = format!("{parsed:?}");
                    assert_eq!(
                        parsed.verify(&key.verifying_key(), now),
                        Err(TokenError::BadSignature),
                        "a token the fixed key never signed verified"
                    );
                }
                Err(TokenError::TooLong) => assert!(text.len() > MAX_TOKEN_LEN),
                Err(_) => {}
            }
        }
        Input::Issued {
            workspace,
            id,
            agent,
            issued_at,
            expires_at,
            now,
            mutate_at,
            mutate_to,
        } => {
            let workspace = map(workspace.into_iter().take(16), WORKSPACE_CHARS);
            if workspace.is_empty() {
                return;
            }
            let mut agent = agent.into_iter().take(64);
            let Some(first) = agent.next() else { return };
            let agent = map([first], AGENT_FIRST) + &map(agent, AGENT_REST);
            let claims = TokenClaims {
                token_id: format!("tok_{}", map(id, ID_CHARS)),
                agent,
                issued_at,
                expires_at,
            };
            let value = token::issue(&workspace, &claims, &key);
            assert!(value.len() <= MAX_TOKEN_LEN, "an issued token is over MAX_TOKEN_LEN");
            let parsed = token::parse(&value).expect("an issued token parses");
            assert_eq!(parsed.workspace(), workspace);
            assert_eq!(parsed.claims(), &claims);
            let expected = match expires_at {
                Some(at) if now >= at => Err(TokenError::Expired),
                _ => Ok(()),
            };
            assert_eq!(parsed.verify(&key.verifying_key(), now), expected);
            assert_eq!(parsed.verify(&other.verifying_key(), now), Err(TokenError::BadSignature));
            assert_eq!(token::fingerprint(&value).len(), 15);

            let mut bytes = value.into_bytes();
            let at = usize::from(mutate_at) % bytes.len();
            let replacement = 0x21 + mutate_to % 0x5e; // printable ASCII
            if bytes[at] == replacement {
                return;
            }
            bytes[at] = replacement;
            let changed = String::from_utf8(bytes).expect("ASCII stays UTF-8");
            if let Ok(parsed) = token::parse(&changed) {
                assert_eq!(
                    parsed.verify(&key.verifying_key(), i64::MIN),
                    Err(TokenError::BadSignature),
                    "a token with one character changed still verifies"
                );
            }
        }
    }
});
