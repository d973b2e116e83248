//! Domain types and pure logic of agentsecrets.
//!
//! This crate holds no I/O. It owns the rules that every entry point shares: which names
//! are valid, how an injection is spelled and applied, what a refusal looks like, how a
//! response is scrubbed of echoed secrets and what an audit entry contains.
//!
//! Invariant kept here: a secret value only ever lives in a [`secret::SecretValue`], which
//! zeroizes on drop and cannot be printed by accident.

pub mod audit;
pub mod dotenv;
pub mod identity;
pub mod inject;
pub mod names;
pub mod net;
pub mod policy;
pub mod redact;
pub mod refusal;
pub mod secret;
pub mod token;
