//! The engine: one path for every call, whichever entry point it came through.
//!
//! identify -> check the target (URL, scheme, allowlist, SSRF) -> record the call ahead
//! -> resolve secrets -> inject -> forward -> stream back through redaction -> settle the
//! record. No secret is read from the vault before every policy check has passed and the
//! write-ahead record is committed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentsecrets_core::audit::{CallStatus, Transport};
use agentsecrets_core::identity::IdentityLevel;
use agentsecrets_core::inject::{self, InjectError, InjectStyle, Injection};
use agentsecrets_core::names::{self, SecretKey};
use agentsecrets_core::net::{Target, TargetError, host_allowed};
use agentsecrets_core::policy::{Contract, ContractMode};
use agentsecrets_core::redact::RedactionSet;
use agentsecrets_core::refusal::{Refusal, Slug};
use agentsecrets_core::secret::SecretValue;
use agentsecrets_store::vault::Project;
use agentsecrets_store::{
    AccessSettings, AuditLog, IdentitySettings, NewAuditEntry, Outcome, StrictMode, Vault,
};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use sha2::{Digest, Sha256};

use crate::audit_writer::{AuditWriter, WriterThread};
use crate::forward::{self, AuditGuard, CallSummary, Forwarded};
use crate::governance::{self, RateLimiter};
use crate::identity::TokenVerifier;
use crate::resolver::{ClientResolver, SsrfError, VettingResolver};
use crate::secret_cache::SecretCache;

/// Settings of an engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Admit plain-HTTP targets that resolve to loopback (for local testing).
    pub allow_local_http: bool,
    /// Time to establish an upstream connection.
    pub connect_timeout: Duration,
    /// Time to wait for the upstream's response headers, and between body reads.
    pub upstream_timeout: Duration,
    /// Largest request body accepted from a caller.
    pub max_body_bytes: usize,
    /// How calls reach this engine.
    pub transport: Transport,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            allow_local_http: false,
            connect_timeout: Duration::from_secs(10),
            upstream_timeout: Duration::from_secs(60),
            max_body_bytes: 10 * 1024 * 1024,
            transport: Transport::Http,
        }
    }
}

/// One call as the engine receives it: names of secrets, never values.
#[derive(Debug, Clone, Default)]
pub struct CallSpec {
    /// The target URL as the caller wrote it.
    pub target: String,
    /// The HTTP method.
    pub method: String,
    /// Headers to forward (the entry point has already removed its own control headers).
    pub headers: HeaderMap,
    /// The request body.
    pub body: Bytes,
    /// Where each secret goes.
    pub injections: Vec<Injection>,
    /// `X-AS-Agent-ID` / `--agent-id`.
    pub agent_id: Option<String>,
    /// `X-AS-Agent-Token` / `--token`.
    pub agent_token: Option<String>,
    /// `X-AS-Session-ID` / `--session-id`.
    pub session_id: Option<String>,
    /// `X-AS-Explain` / `--explain`: ask for the decision only.
    pub explain: bool,
}

/// What the engine would decide about a call (`X-AS-Explain`, `call --explain`), worked
/// out without reading a secret value or contacting the upstream.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Explanation {
    /// `allow` or `deny`.
    pub decision: &'static str,
    /// The slug of the refusal, when denied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why, when denied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The rule that refuses the call, for capability refusals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// A rule in report mode that the call breaks (it would be served and flagged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<String>,
    /// The caller's identity level.
    pub identity_level: IdentityLevel,
    /// The caller's agent name, when it has one.
    pub agent_id: Option<String>,
    /// The verified token's id, for issued callers.
    pub token_id: Option<String>,
    /// The HTTP method.
    pub method: String,
    /// The target's host.
    pub domain: String,
    /// The secrets the call names.
    pub secret_keys: Vec<String>,
    /// The policy snapshot the decision was taken under.
    pub policy_snapshot_id: Option<String>,
}

/// What the engine knows about the call so far, for its audit entry.
struct Draft {
    entry: NewAuditEntry,
    started: Instant,
    /// A rule that would have refused the call in enforce mode (report mode).
    report: Option<&'static str>,
    /// The write-ahead entry is in the log: a failure settles it instead of adding one.
    recorded: bool,
}

/// The policy in force for one call.
struct PolicyView {
    /// The vault's data version this view was read at.
    version: Option<i64>,
    allowlist: Arc<Vec<String>>,
    identity: IdentitySettings,
    access: Arc<AccessSettings>,
    contracts: Arc<BTreeMap<String, Contract>>,
    snapshot: String,
}

/// Why an engine could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The upstream HTTP client could not be set up (its TLS roots, say).
    #[error("upstream client: {0}")]
    Client(#[source] reqwest::Error),
    /// The audit writer thread could not be started.
    #[error("audit writer thread: {0}")]
    Writer(#[source] std::io::Error),
}

/// The engine shared by the proxy, `call`, `env` and MCP.
pub struct Engine {
    vault: Arc<Vault>,
    audit: Arc<AuditLog>,
    /// Group-commits the records of forwarded calls. Declared before `_writer_thread`, so
    /// the engine's own handle is gone when the thread's owner waits for it to drain.
    writer: AuditWriter,
    project: Project,
    resolver: Arc<VettingResolver>,
    client: reqwest::Client,
    config: EngineConfig,
    policy: Mutex<PolicyCache>,
    secrets: SecretCache,
    verifier: TokenVerifier,
    rates: RateLimiter,
    calls: AtomicU64,
    /// Held for its `Drop`, which waits for the queued records to be written.
    _writer_thread: WriterThread,
}

/// The policy as last read, and the snapshot id of that content.
#[derive(Default)]
struct PolicyCache {
    data_version: Option<i64>,
    allowlist: Arc<Vec<String>>,
    identity: IdentitySettings,
    access: Arc<AccessSettings>,
    contracts: Arc<BTreeMap<String, Contract>>,
    snapshot: String,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("project", &self.project.name).finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine over an open vault and audit log, serving one project.
    pub fn new(
        vault: Arc<Vault>,
        audit: Arc<AuditLog>,
        project: Project,
        config: EngineConfig,
    ) -> Result<Engine, EngineError> {
        let signer = vault.clone();
        audit.set_signer(Box::new(move |message| signer.sign(message)));
        let resolver = Arc::new(VettingResolver::new(config.allow_local_http));
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(ClientResolver(resolver.clone())))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.upstream_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .use_rustls_tls()
            .build()
            .map_err(EngineError::Client)?;
        let (writer, writer_thread) =
            AuditWriter::start(audit.clone()).map_err(EngineError::Writer)?;
        Ok(Engine {
            vault,
            audit,
            writer,
            project,
            resolver,
            client,
            config,
            policy: Mutex::default(),
            secrets: SecretCache::default(),
            verifier: TokenVerifier::default(),
            rates: RateLimiter::default(),
            calls: AtomicU64::new(0),
            _writer_thread: writer_thread,
        })
    }

    /// The project this engine serves.
    pub fn project(&self) -> &Project {
        &self.project
    }

    /// The engine's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Number of calls handled so far.
    pub fn calls_served(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Tells the SSRF guard the proxy's own port, so the proxy never calls itself.
    pub fn set_own_port(&self, port: u16) {
        self.resolver.set_own_port(port);
    }

    /// Runs one call through every check, then forwards it. A refusal has already been
    /// written to the audit log when it is returned.
    pub async fn call(&self, spec: CallSpec) -> Result<Forwarded, Refusal> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut draft = self.draft(&spec);

        let result = self.checked_call(spec, &mut draft).await;
        if let Err(refusal) = &result
            && !draft.recorded
        {
            self.record_refusal(&draft, refusal);
        }
        result
    }

    /// Writes the audit entry of a call refused before it reached the engine (for
    /// example a missing session token), with what is known of it.
    pub fn refuse_early(&self, spec: &CallSpec, refusal: &Refusal) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let draft = self.draft(spec);
        self.record_refusal(&draft, refusal);
    }

    /// What the engine would decide about `spec`, with an `explain` audit entry and
    /// nothing else: no secret value is read and the upstream is never contacted.
    pub async fn explain(&self, spec: CallSpec) -> Explanation {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut draft = self.draft(&spec);

        let mut decision = self.decide(&spec, &mut draft, false).await.map(|_| ());
        if decision.is_ok() {
            decision = self.check_secrets_exist(&draft.entry.secret_keys);
        }
        let status_code = match &decision {
            Ok(()) => 200,
            Err(refusal) => refusal.http_status(),
        };
        let outcome = Outcome {
            status: CallStatus::Ok,
            reason: "explain".to_owned(),
            status_code: Some(status_code),
            duration_ms: draft.started.elapsed().as_millis() as u64,
            redacted: false,
        };
        if let Err(err) = self.audit.record(&draft.entry, &outcome) {
            tracing::warn!(error = %err, "cannot record an explain entry");
        }
        explanation(&draft, decision.err())
    }

    /// Every check of a call, in the order of the design: session id, identity, request
    /// shape, allowlist and SSRF, then the capability rules. `count` says whether the call
    /// counts against a rate limit (an explain does not).
    async fn decide(
        &self,
        spec: &CallSpec,
        draft: &mut Draft,
        count: bool,
    ) -> Result<(Target, Method, Option<i64>), Refusal> {
        check_session_id(spec.session_id.as_deref())?;
        self.identify(spec, draft)?;

        let method = parse_method(&spec.method)?;
        if spec.injections.is_empty() {
            return Err(Refusal::bad_request(
                "no injection given: name at least one secret to inject (for example \
                 X-AS-Inject-Bearer: KEY, or --bearer KEY)",
            ));
        }
        let target = Target::parse(&spec.target).map_err(target_refusal)?;
        draft.entry.target_url = target.display_without_query();
        draft.entry.domain = target.domain();

        let policy = self.policy();
        self.authorize(&target, &policy, draft).await?;
        let host = target.host().to_string();
        self.check_capabilities(&policy, draft, Some(&host), count)?;
        Ok((target, method, policy.version))
    }

    async fn checked_call(&self, spec: CallSpec, draft: &mut Draft) -> Result<Forwarded, Refusal> {
        let (target, method, version) = self.decide(&spec, draft, true).await?;

        let id = self.writer.begin(draft.entry.clone()).await.map_err(|err| audit_refusal(&err))?;
        draft.recorded = true;

        let outbound = match self.prepare(&spec, &target, method, version) {
            Ok(outbound) => outbound,
            Err(refusal) => {
                self.settle(&id, draft, &refusal);
                return Err(refusal);
            }
        };
        let summary = CallSummary {
            agent: draft.entry.agent_id.clone().unwrap_or_else(|| "(anonymous)".to_owned()),
            method: draft.entry.method.clone(),
            domain: draft.entry.domain.clone(),
        };
        let mut guard = AuditGuard::new(self.writer.clone(), summary, id, draft.started);
        guard.set_report(draft.report);
        forward::send(&self.client, outbound, guard, self.config.upstream_timeout).await
    }

    /// The secrets for `agentsecrets env`: the same identity checks as a call, then one
    /// committed audit entry (transport `env`, the command's name, the key names), then
    /// the values. `keys` empty means every secret of the project.
    pub fn env_secrets(
        &self,
        command: &str,
        keys: &[String],
        caller: &CallSpec,
    ) -> Result<Vec<(String, SecretValue)>, Refusal> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut draft = self.draft(caller);
        draft.entry.method = "ENV".to_owned();
        draft.entry.target_url = command.to_owned();
        draft.entry.auth_styles = vec!["env_inject".to_owned()];

        let result = self.checked_env(keys, caller, &mut draft);
        if let Err(refusal) = &result {
            self.record_refusal(&draft, refusal);
        }
        result
    }

    fn checked_env(
        &self,
        keys: &[String],
        caller: &CallSpec,
        draft: &mut Draft,
    ) -> Result<Vec<(String, SecretValue)>, Refusal> {
        check_session_id(caller.session_id.as_deref())?;
        self.identify(caller, draft)?;
        let policy = self.policy();
        draft.entry.policy_snapshot_id = Some(policy.snapshot.clone());
        let stored = self.stored_names()?;
        let names = if keys.is_empty() {
            // Every secret the caller's rules let it use; the others are left out.
            self.permitted(&policy, draft, stored.clone())
        } else {
            keys.to_vec()
        };
        draft.entry.secret_keys = names.clone();
        self.check_capabilities(&policy, draft, None, true)?;
        if let Some(missing) = names.iter().find(|name| !stored.contains(name)) {
            return Err(Refusal::secret_not_found(missing, &self.project.name));
        }

        let outcome = Outcome {
            status: CallStatus::Ok,
            reason: draft.report.unwrap_or("-").to_owned(),
            status_code: None,
            duration_ms: draft.started.elapsed().as_millis() as u64,
            redacted: false,
        };
        self.audit.record(&draft.entry, &outcome).map_err(|err| audit_refusal(&err))?;

        let mut values = Vec::with_capacity(names.len());
        for name in names {
            let key = SecretKey::parse(&name).map_err(|e| Refusal::bad_request(e.to_string()))?;
            values.push((name, self.resolve_secret(&key)?));
        }
        Ok(values)
    }

    /// Identity first: verify a token or a declared name, then the workspace's minimum.
    fn identify(&self, spec: &CallSpec, draft: &mut Draft) -> Result<(), Refusal> {
        let identified = self.verifier.identify(
            &self.vault,
            spec.agent_token.as_deref(),
            spec.agent_id.as_deref(),
        );
        draft.entry.token_fingerprint = identified.fingerprint;
        draft.entry.token_id = identified.claimed_token_id;
        let identity = identified.identity?;
        draft.entry.agent_id = identity.agent.as_ref().map(|a| a.to_string());
        draft.entry.identity_level = identity.level;
        draft.entry.token_id = identity.token_id.clone();
        self.check_min_identity(identity.level, draft)
    }

    /// Refuses (or, in report mode, flags) a caller below the workspace's minimum level.
    fn check_min_identity(&self, level: IdentityLevel, draft: &mut Draft) -> Result<(), Refusal> {
        let settings = self.policy().identity;
        if settings.strict == StrictMode::Off || level.rank() >= settings.min_identity.rank() {
            return Ok(());
        }
        if settings.strict == StrictMode::Report {
            draft.report = Some("identity_required_report");
            return Ok(());
        }
        Err(Refusal::new(
            Slug::IdentityRequired,
            format!(
                "this workspace requires at least a {} identity: send X-AS-Agent-ID (declared) \
                 or X-AS-Agent-Token (issued), or --agent-id / --token",
                settings.min_identity.as_str()
            ),
        ))
    }

    /// Writes the last-use times of the tokens verified since the previous flush, in one
    /// registry transaction (so a call is never a registry write).
    pub fn flush_token_use(&self) {
        let used = self.verifier.take_used();
        if let Err(err) = self.vault.touch_tokens(&used) {
            tracing::warn!(error = %err, "cannot record token last-use times");
        }
    }

    /// The capability rules that bind the caller: method, host (for HTTP calls) and every
    /// secret, then the rate limit. A rule in report mode flags the call instead.
    fn check_capabilities(
        &self,
        policy: &PolicyView,
        draft: &mut Draft,
        host: Option<&str>,
        count: bool,
    ) -> Result<(), Refusal> {
        let level = draft.entry.identity_level;
        let agent = draft.entry.agent_id.clone();
        let gates = governance::gates(level, agent.as_deref(), &policy.access, &policy.contracts);
        for gate in &gates {
            let keys = &draft.entry.secret_keys;
            let checked = match host {
                Some(host) => gate.check_call(&draft.entry.method, host, keys),
                None => keys.iter().try_for_each(|key| gate.check_secret(key)),
            };
            let over_rate = |rate: u32| {
                let agent = agent.as_deref().unwrap_or_default();
                (count && !self.rates.admit(agent, rate)).then(|| format!("rate {rate}/min"))
            };
            let denied = match (checked, gate) {
                (Err(denial), _) => Some(denial.rule),
                (Ok(()), governance::Gate::Contract { contract, .. }) => {
                    contract.rate_per_minute.and_then(over_rate)
                }
                (Ok(()), _) => None,
            };
            let Some(rule) = denied else { continue };
            if gate.mode() == ContractMode::Report {
                draft.report.get_or_insert("capability_denied_report");
                continue;
            }
            return Err(Refusal::capability_denied(&gate.whose(), &rule));
        }
        Ok(())
    }

    /// The names among `stored` that the caller's rules let it use.
    fn permitted(&self, policy: &PolicyView, draft: &Draft, stored: Vec<String>) -> Vec<String> {
        let level = draft.entry.identity_level;
        let agent = draft.entry.agent_id.as_deref();
        let gates = governance::gates(level, agent, &policy.access, &policy.contracts);
        let enforced: Vec<_> = gates.iter().filter(|g| g.mode() == ContractMode::Enforce).collect();
        stored
            .into_iter()
            .filter(|key| enforced.iter().all(|g| g.check_secret(key).is_ok()))
            .collect()
    }

    /// Refuses a call that names a secret the project does not hold, reading names only.
    fn check_secrets_exist(&self, keys: &[String]) -> Result<(), Refusal> {
        let stored = self.stored_names()?;
        match keys.iter().find(|key| !stored.contains(key)) {
            Some(missing) => Err(Refusal::secret_not_found(missing, &self.project.name)),
            None => Ok(()),
        }
    }

    fn stored_names(&self) -> Result<Vec<String>, Refusal> {
        self.vault.secret_names(&self.project).map_err(|err| {
            Refusal::new(Slug::VaultUnavailable, format!("the vault cannot be read: {err}"))
        })
    }

    /// Scheme, allowlist and SSRF, in that order, before anything else happens.
    async fn authorize(
        &self,
        target: &Target,
        policy: &PolicyView,
        draft: &mut Draft,
    ) -> Result<(), Refusal> {
        let domain = target.domain();
        let allowlist = &policy.allowlist;
        draft.entry.policy_snapshot_id = Some(policy.snapshot.clone());

        if !host_allowed(target.host(), allowlist) {
            return Err(Refusal::domain_not_allowed(&domain, allowlist.is_empty()));
        }

        let addrs = self.resolver.vet(target.host(), target.port()).await.map_err(|err| {
            let slug = match err {
                SsrfError::Unresolved(_) => Slug::UpstreamError,
                _ => Slug::SsrfBlocked,
            };
            let message = match err {
                SsrfError::Unresolved(_) => format!("upstream host {domain} does not resolve"),
                other => other.to_string(),
            };
            Refusal { domain: Some(domain.clone()), ..Refusal::new(slug, message) }
        })?;

        let local_http = self.config.allow_local_http && VettingResolver::all_loopback(&addrs);
        if !target.is_https() && !local_http {
            let message = format!(
                "target {} is plain http; only https targets are called (loopback targets are \
                 allowed over http with proxy start --allow-local-http)",
                target.display_without_query()
            );
            return Err(Refusal {
                domain: Some(domain),
                ..Refusal::new(Slug::InsecureScheme, message)
            });
        }
        Ok(())
    }

    /// Reads the secrets and builds the outbound request. Runs only after every check.
    fn prepare(
        &self,
        spec: &CallSpec,
        target: &Target,
        method: Method,
        version: Option<i64>,
    ) -> Result<forward::Outbound, Refusal> {
        // `version` was read with the policy, before the secrets: a change made meanwhile
        // shows as a newer version on the next call, never as old values cached under it.
        let mut values: Vec<(&Injection, SecretValue)> = Vec::with_capacity(spec.injections.len());
        for injection in &spec.injections {
            let key = &injection.key;
            let value = self.secrets.value(version, key, || self.resolve_secret(key))?;
            values.push((injection, value));
        }

        let mut url = target.url().clone();
        let mut headers = forward::outbound_headers(&spec.headers);
        let mut body = spec.body.to_vec();
        for (injection, value) in &values {
            apply(injection, value, &mut url, &mut headers, &mut body).map_err(inject_refusal)?;
        }
        set_default_content_type(&spec.injections, &spec.body, &mut headers);

        let keys: Vec<&SecretKey> = values.iter().map(|(injection, _)| &injection.key).collect();
        let redaction =
            self.secrets.redaction(version, &keys, || redaction_set(values.iter().map(|(_, v)| v)));
        Ok(forward::Outbound { method, url, headers, body: Bytes::from(body), redaction })
    }

    fn resolve_secret(&self, key: &SecretKey) -> Result<SecretValue, Refusal> {
        match self.vault.secret(&self.project, key.as_str()) {
            Ok(Some(value)) => Ok(value),
            Ok(None) => Err(Refusal::secret_not_found(key.as_str(), &self.project.name)),
            Err(err) => {
                tracing::warn!(error = %err, secret.name = key.as_str(), "vault read failed");
                Err(Refusal::new(
                    Slug::VaultUnavailable,
                    format!("the vault cannot be read: {err}"),
                ))
            }
        }
    }

    /// The policy in force and its snapshot id, re-read only when the vault changed.
    fn policy(&self) -> PolicyView {
        let version = self.vault.data_version().ok();
        let mut cache = self.policy.lock().unwrap_or_else(|p| p.into_inner());
        if cache.data_version.is_none() || cache.data_version != version {
            *cache = self.load_policy(version);
        }
        PolicyView {
            version,
            allowlist: cache.allowlist.clone(),
            identity: cache.identity,
            access: cache.access.clone(),
            contracts: cache.contracts.clone(),
            snapshot: cache.snapshot.clone(),
        }
    }

    fn load_policy(&self, version: Option<i64>) -> PolicyCache {
        let allowlist: Vec<String> = match self.vault.allowlist() {
            Ok(entries) => entries.into_iter().map(|e| e.domain).collect(),
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the allowlist; treating it as empty");
                Vec::new()
            }
        };
        let identity = self.vault.identity_settings().unwrap_or_else(|err| {
            // Fail closed: an unreadable setting must not open the workspace wider.
            tracing::warn!(error = %err, "cannot read identity settings; requiring issued");
            IdentitySettings { strict: StrictMode::Enforce, min_identity: IdentityLevel::Issued }
        });
        // Fail closed here too: unreadable rules for anonymous callers become "none", and
        // unreadable contracts fall back to the anonymous rules for every named caller.
        let access = self.vault.access_settings().unwrap_or_else(|err| {
            tracing::warn!(error = %err, "cannot read access settings; anonymous get none");
            AccessSettings { anonymous_secrets: Some(Vec::new()), ..AccessSettings::default() }
        });
        let contracts = self.vault.contracts().unwrap_or_else(|err| {
            tracing::warn!(error = %err, "cannot read capability contracts");
            BTreeMap::new()
        });
        let content = serde_json::json!({
            "allowlist": allowlist,
            "identity": identity,
            "access": access,
            "contracts": contracts,
        })
        .to_string();
        let snapshot = snapshot_id(&content);
        if let Err(err) = self.audit.save_snapshot(&snapshot, &content) {
            tracing::warn!(error = %err, "cannot store the policy snapshot");
        }
        PolicyCache {
            data_version: version,
            allowlist: Arc::new(allowlist),
            identity,
            access: Arc::new(access),
            contracts: Arc::new(contracts),
            snapshot,
        }
    }

    fn draft(&self, spec: &CallSpec) -> Draft {
        let keys = spec.injections.iter().map(|i| i.key.to_string()).collect();
        let styles = spec.injections.iter().map(|i| i.style.name().to_owned()).collect();
        let entry = NewAuditEntry {
            workspace: self.vault.workspace_id().to_owned(),
            project: self.project.name.clone(),
            agent_id: None,
            identity_level: IdentityLevel::Anonymous,
            token_id: None,
            token_fingerprint: None,
            session_id: spec.session_id.clone().filter(|s| names::is_valid_session_id(s)),
            transport: self.config.transport,
            method: spec.method.to_ascii_uppercase().chars().take(16).collect(),
            target_url: String::new(),
            domain: String::new(),
            secret_keys: dedup(keys),
            auth_styles: dedup(styles),
            policy_snapshot_id: None,
            at: None,
        };
        Draft { entry, started: Instant::now(), report: None, recorded: false }
    }

    fn record_refusal(&self, draft: &Draft, refusal: &Refusal) {
        let outcome = refusal_outcome(draft, refusal);
        if refusal.slug.is_block() {
            tracing::info!(reason = refusal.slug.as_str(), target.domain = %draft.entry.domain,
                "call refused");
        } else {
            tracing::info!(reason = refusal.slug.as_str(), target.domain = %draft.entry.domain,
                "call failed");
        }
        if refusal.slug == Slug::AuditUnavailable {
            return;
        }
        if let Err(err) = self.audit.record(&draft.entry, &outcome) {
            tracing::error!(error = %err, "cannot record a refused call in the audit log");
        }
    }

    fn settle(&self, id: &str, draft: &Draft, refusal: &Refusal) {
        tracing::info!(reason = refusal.slug.as_str(), target.domain = %draft.entry.domain,
            "call failed");
        self.writer.complete(id.to_owned(), refusal_outcome(draft, refusal));
    }
}

/// Shared flag set when a response had a secret scrubbed from it.
pub type RedactedFlag = Arc<AtomicBool>;

fn audit_refusal(err: &agentsecrets_store::StoreError) -> Refusal {
    tracing::warn!(error = %err, "audit log unavailable; refusing the call");
    Refusal::new(
        Slug::AuditUnavailable,
        format!(
            "the audit log cannot be written ({err}); no credential is used without its record"
        ),
    )
}

fn refusal_outcome(draft: &Draft, refusal: &Refusal) -> Outcome {
    let status = if refusal.slug.is_block() { CallStatus::Blocked } else { CallStatus::Error };
    Outcome {
        status,
        reason: refusal.slug.as_str().to_owned(),
        status_code: Some(refusal.http_status()),
        duration_ms: draft.started.elapsed().as_millis() as u64,
        redacted: false,
    }
}

fn parse_method(raw: &str) -> Result<Method, Refusal> {
    let upper = raw.to_ascii_uppercase();
    if upper.is_empty() || upper.len() > 16 || !upper.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(Refusal::bad_request(
            "invalid HTTP method: use GET, POST, PUT, PATCH, DELETE, HEAD or OPTIONS",
        ));
    }
    Method::from_bytes(upper.as_bytes()).map_err(|_| Refusal::bad_request("invalid HTTP method"))
}

fn target_refusal(err: TargetError) -> Refusal {
    let slug = match err {
        TargetError::UnsupportedScheme(_) => Slug::InsecureScheme,
        _ => Slug::BadRequest,
    };
    Refusal::new(slug, format!("invalid target URL: {err}"))
}

fn inject_refusal(err: InjectError) -> Refusal {
    Refusal::bad_request(err.to_string())
}

fn apply(
    injection: &Injection,
    value: &SecretValue,
    url: &mut url::Url,
    headers: &mut HeaderMap,
    body: &mut Vec<u8>,
) -> Result<(), InjectError> {
    let key = &injection.key;
    match &injection.style {
        InjectStyle::Bearer => {
            let value = inject::bearer_value(key, value)?;
            set_header(headers, http::header::AUTHORIZATION, &value, key, "bearer")
        }
        InjectStyle::Basic => {
            inject::check_header_safe(key, value, "basic")?;
            let value = inject::basic_value(key, value)?;
            set_header(headers, http::header::AUTHORIZATION, &value, key, "basic")
        }
        InjectStyle::Header(name) => {
            inject::check_header_safe(key, value, "header")?;
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| InjectError::HeaderName(name.clone()))?;
            set_header(headers, name, value, key, "header")
        }
        InjectStyle::Query(param) => inject::apply_query(url, param, key, value),
        InjectStyle::Body(path) => {
            *body = inject::apply_json_body(body, path, key, value)?;
            Ok(())
        }
        InjectStyle::Form(field) => {
            *body = inject::apply_form(body, field, key, value)?;
            Ok(())
        }
    }
}

fn set_header(
    headers: &mut HeaderMap,
    name: HeaderName,
    value: &SecretValue,
    key: &SecretKey,
    style: &'static str,
) -> Result<(), InjectError> {
    let mut header = HeaderValue::from_bytes(value.expose()).map_err(|_| InjectError::Value {
        key: key.to_string(),
        style,
        why: "the value holds bytes that cannot stand in an HTTP header",
    })?;
    header.set_sensitive(true);
    headers.insert(name, header);
    Ok(())
}

/// `application/json` for body-path injection or a body that parses as JSON, form
/// encoding for form injection, unless the caller set a type.
fn set_default_content_type(injections: &[Injection], body: &Bytes, headers: &mut HeaderMap) {
    if headers.contains_key(http::header::CONTENT_TYPE) {
        return;
    }
    let any = |f: fn(&InjectStyle) -> bool| injections.iter().any(|i| f(&i.style));
    let content_type = if any(|s| matches!(s, InjectStyle::Form(_))) {
        "application/x-www-form-urlencoded"
    } else if any(|s| matches!(s, InjectStyle::Body(_)))
        || (!body.is_empty() && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok())
    {
        "application/json"
    } else {
        return;
    };
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
}

/// Every injected value, plus the password half of a `user:pass` value, which an
/// upstream may echo on its own.
fn redaction_set<'a>(values: impl Iterator<Item = &'a SecretValue>) -> RedactionSet {
    let mut patterns: Vec<&[u8]> = Vec::new();
    for value in values {
        let bytes = value.expose();
        patterns.push(bytes);
        if let Some(at) = bytes.iter().position(|b| *b == b':') {
            let password = &bytes[at + 1..];
            if password.len() >= 4 {
                patterns.push(password);
            }
        }
    }
    RedactionSet::new(patterns)
}

/// Refuses a session id that breaks [`names::is_valid_session_id`]; the bad value is
/// never quoted.
fn check_session_id(raw: Option<&str>) -> Result<(), Refusal> {
    match raw {
        Some(raw) if !names::is_valid_session_id(raw) => Err(Refusal::bad_request(
            "invalid session id: use 1 to 128 printable ASCII characters without spaces \
             (X-AS-Session-ID, --session-id or AGENTSECRETS_SESSION_ID)",
        )),
        _ => Ok(()),
    }
}

fn explanation(draft: &Draft, refusal: Option<Refusal>) -> Explanation {
    let entry = &draft.entry;
    let (error, message, rule) = match refusal {
        Some(r) => (Some(r.slug.as_str().to_owned()), Some(r.message), r.rule),
        None => (None, None, None),
    };
    Explanation {
        decision: if error.is_some() { "deny" } else { "allow" },
        error,
        message,
        rule,
        report: draft.report.map(str::to_owned),
        identity_level: entry.identity_level,
        agent_id: entry.agent_id.clone(),
        token_id: entry.token_id.clone(),
        method: entry.method.clone(),
        domain: entry.domain.clone(),
        secret_keys: entry.secret_keys.clone(),
        policy_snapshot_id: entry.policy_snapshot_id.clone(),
    }
}

fn dedup(mut items: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    items.retain(|item| seen.insert(item.clone()));
    items
}

/// `pol_` and the first 16 hex digits of the content's SHA-256: one id per distinct policy.
fn snapshot_id(content: &str) -> String {
    let digest = Sha256::digest(content.as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("pol_{hex}")
}
