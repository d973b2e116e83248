//! Capability contracts of registered agents, their change log, and the workspace's rules
//! for callers without a contract of their own (anonymous and declared ones).
//!
//! A contract belongs to one registered agent row: deleting the agent retires its
//! contract with it, and a name registered again starts with no contract. Every set and
//! clear is recorded with who made it, when, and the contract as set.

use std::collections::BTreeMap;

use agentsecrets_core::policy::Contract;
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use crate::vault::Vault;
use crate::{Result, StoreError, db};

/// What a declared caller's contract does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeclaredContracts {
    /// A declared name's contract applies on top of the anonymous rules (it can only
    /// narrow what the caller gets).
    #[default]
    Enforce,
    /// Declared callers get the anonymous rules only.
    Ignore,
}

impl DeclaredContracts {
    /// Parses `enforce` or `ignore`.
    pub fn parse(raw: &str) -> Option<DeclaredContracts> {
        match raw {
            "enforce" => Some(DeclaredContracts::Enforce),
            "ignore" => Some(DeclaredContracts::Ignore),
            _ => None,
        }
    }

    /// The setting as the CLI spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            DeclaredContracts::Enforce => "enforce",
            DeclaredContracts::Ignore => "ignore",
        }
    }
}

/// The workspace's rules for callers that no contract of their own binds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AccessSettings {
    /// Whether declared names' contracts apply.
    pub declared_contracts: DeclaredContracts,
    /// The secrets anonymous callers (and declared names without a contract) may use:
    /// `None` means every secret, `Some(empty)` none.
    pub anonymous_secrets: Option<Vec<String>>,
}

/// One recorded change of a contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContractChange {
    /// When, RFC 3339.
    pub at: String,
    /// The agent.
    pub agent: String,
    /// `set` or `clear`.
    pub action: String,
    /// The contract as set (none for a clear).
    pub contract: Option<Contract>,
    /// Who made the change.
    pub actor: String,
}

impl Vault {
    /// The contract of the live agent `agent`, if it has one.
    pub fn contract(&self, agent: &str) -> Result<Option<Contract>> {
        let raw: Option<String> = self
            .conn()
            .query_row(
                "SELECT c.contract FROM agent_contracts c JOIN agents a ON a.id = c.agent_row \
                 WHERE a.workspace_id = ?1 AND a.name = ?2 AND a.deleted_at IS NULL",
                params![self.workspace_id(), agent],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        raw.map(|text| self.parse_contract(&text)).transpose()
    }

    /// Every live agent's contract, by agent name.
    pub fn contracts(&self) -> Result<BTreeMap<String, Contract>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT a.name, c.contract FROM agent_contracts c \
                 JOIN agents a ON a.id = c.agent_row \
                 WHERE a.workspace_id = ?1 AND a.deleted_at IS NULL",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([self.workspace_id()], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<(String, String)>>>())
            .map_err(|e| self.err(e))?;
        drop(stmt);
        drop(conn);
        rows.into_iter().map(|(name, text)| Ok((name, self.parse_contract(&text)?))).collect()
    }

    /// Sets the contract of the live agent `agent` and records the change.
    pub fn set_contract(&self, agent: &str, contract: &Contract, actor: &str) -> Result<()> {
        let text = serde_json::to_string(contract).map_err(|e| self.corrupt_json(e))?;
        let conn = self.conn();
        db::immediate(&conn, self.path(), |conn| {
            let row = self.live_row_or_error(conn, agent)?;
            let at = crate::timestamp_now();
            conn.execute(
                "INSERT INTO agent_contracts (agent_row, contract, updated_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (agent_row) DO UPDATE SET contract = excluded.contract, \
                 updated_at = excluded.updated_at",
                params![row, text, at],
            )
            .map_err(|e| self.err(e))?;
            self.log_contract(conn, agent, "set", Some(&text), actor, &at)
        })
    }

    /// Removes the contract of `agent`; false when it had none.
    pub fn clear_contract(&self, agent: &str, actor: &str) -> Result<bool> {
        let conn = self.conn();
        db::immediate(&conn, self.path(), |conn| {
            let row = self.live_row_or_error(conn, agent)?;
            let removed = conn
                .execute("DELETE FROM agent_contracts WHERE agent_row = ?1", [row])
                .map_err(|e| self.err(e))?;
            if removed > 0 {
                let at = crate::timestamp_now();
                self.log_contract(conn, agent, "clear", None, actor, &at)?;
            }
            Ok(removed > 0)
        })
    }

    /// Every recorded contract change, or those of one agent name, oldest first.
    pub fn contract_log(&self, agent: Option<&str>) -> Result<Vec<ContractChange>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT at, agent, action, contract, actor FROM contract_log \
                 WHERE workspace_id = ?1 AND (?2 IS NULL OR agent = ?2) ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        type Row = (String, String, String, Option<String>, String);
        let rows = stmt
            .query_map(params![self.workspace_id(), agent], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<Row>>>())
            .map_err(|e| self.err(e))?;
        drop(stmt);
        drop(conn);
        rows.into_iter()
            .map(|(at, agent, action, contract, actor)| {
                let contract = contract.map(|text| self.parse_contract(&text)).transpose()?;
                Ok(ContractChange { at, agent, action, contract, actor })
            })
            .collect()
    }

    /// The workspace's rules for callers without a contract of their own.
    pub fn access_settings(&self) -> Result<AccessSettings> {
        let declared_contracts = self
            .setting("declared_contracts")?
            .and_then(|raw| DeclaredContracts::parse(&raw))
            .unwrap_or_default();
        let anonymous_secrets = self.setting("anonymous_secrets")?.map(|raw| {
            raw.split(',').filter(|k| !k.is_empty()).map(str::to_owned).collect::<Vec<_>>()
        });
        Ok(AccessSettings { declared_contracts, anonymous_secrets })
    }

    /// Sets whether declared names' contracts apply.
    pub fn set_declared_contracts(&self, mode: DeclaredContracts) -> Result<()> {
        self.set_setting("declared_contracts", mode.as_str())
    }

    /// Sets the secrets anonymous callers may use: `None` for every secret, an empty list
    /// for none.
    pub fn set_anonymous_secrets(&self, keys: Option<&[String]>) -> Result<()> {
        match keys {
            Some(keys) => self.set_setting("anonymous_secrets", &keys.join(",")),
            None => self.remove_setting("anonymous_secrets"),
        }
    }

    fn live_row_or_error(&self, conn: &rusqlite::Connection, agent: &str) -> Result<i64> {
        conn.query_row(
            "SELECT id FROM agents WHERE workspace_id = ?1 AND name = ?2 AND deleted_at IS NULL",
            params![self.workspace_id(), agent],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| self.err(e))?
        .ok_or_else(|| {
            StoreError::Invalid(format!(
                "no agent named {agent}; register it first with: agentsecrets agent register \
                 {agent} (or agent token issue {agent})"
            ))
        })
    }

    fn log_contract(
        &self,
        conn: &rusqlite::Connection,
        agent: &str,
        action: &str,
        contract: Option<&str>,
        actor: &str,
        at: &str,
    ) -> Result<()> {
        conn.execute(
            "INSERT INTO contract_log (workspace_id, agent, action, contract, actor, at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![self.workspace_id(), agent, action, contract, actor, at],
        )
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn parse_contract(&self, text: &str) -> Result<Contract> {
        serde_json::from_str(text).map_err(|e| self.corrupt_json(e))
    }

    fn corrupt_json(&self, err: serde_json::Error) -> StoreError {
        StoreError::Corrupt {
            path: self.path().to_owned(),
            detail: format!("damaged capability contract: {err}"),
        }
    }
}
