//! The MCP server: one engine, one caller identity and one session id per run.

use std::sync::Arc;

use agentsecrets_core::audit::Transport;
use agentsecrets_core::refusal::{Refusal, Slug};
use agentsecrets_proxy::{CallSpec, Engine, EngineConfig};
use agentsecrets_store::vault::Project;
use agentsecrets_store::{AuditLog, Vault};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, JsonObject,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{RequestContext, ServerInitializeError};
use rmcp::transport::IntoTransport;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};

use crate::Error;
use crate::tools::{self, ApiCallResult, SecretList};

const INSTRUCTIONS: &str = "agentsecrets makes HTTP calls for you with stored credentials. \
    Call list_secrets to see which secrets exist (names only), then api_call with \
    injections naming where each secret goes, for example {\"bearer\": \"STRIPE_KEY\"}. \
    You never see a secret's value; any echo of one in a response is redacted.";

/// Who the server calls as, and the engine settings it runs with.
#[derive(Clone, Default)]
pub struct ServeOptions {
    /// The declared agent name (`--agent-id`), if any.
    pub agent_id: Option<String>,
    /// The issued agent token (`--token`), if any; verified by the engine on every call.
    pub agent_token: Option<String>,
    /// Engine settings; the transport is always set to [`Transport::Mcp`].
    pub engine: EngineConfig,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("agent_id", &self.agent_id)
            .field("agent_token", &self.agent_token.as_ref().map(|_| "[redacted]"))
            .field("engine", &self.engine)
            .finish()
    }
}

/// The MCP server. Every `api_call` goes through the engine with this run's identity and
/// session id; `list_secrets` reads names (never values) from the vault.
pub struct McpServer {
    engine: Engine,
    vault: Arc<Vault>,
    agent_id: Option<String>,
    agent_token: Option<String>,
    session_id: String,
}

impl std::fmt::Debug for McpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpServer")
            .field("project", &self.engine.project().name)
            .field("agent_id", &self.agent_id)
            .field("session_id", &self.session_id)
            .finish_non_exhaustive()
    }
}

impl McpServer {
    /// A server over an open vault and audit log, serving one project, with a fresh
    /// session id.
    pub fn new(
        vault: Arc<Vault>,
        audit: Arc<AuditLog>,
        project: Project,
        options: ServeOptions,
    ) -> Result<McpServer, Error> {
        let config = EngineConfig { transport: Transport::Mcp, ..options.engine };
        let engine = Engine::new(vault.clone(), audit, project, config)
            .map_err(|err| Error::Engine(Box::new(err)))?;
        let session_id = format!("mcp_{}", ulid::Ulid::new().to_string().to_ascii_lowercase());
        Ok(McpServer {
            engine,
            vault,
            agent_id: options.agent_id,
            agent_token: options.agent_token,
            session_id,
        })
    }

    /// The session id every call of this run is recorded under.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// Serves the protocol on stdin and stdout until the client closes stdin.
    pub async fn serve_stdio(self) -> Result<(), Error> {
        self.serve(crate::stdio::filtered(tokio::io::stdin(), tokio::io::stdout())).await
    }

    /// Serves the protocol on any transport until the peer goes away.
    pub async fn serve<T, E, A>(self, transport: T) -> Result<(), Error>
    where
        T: IntoTransport<RoleServer, E, A>,
        E: std::error::Error + Send + Sync + 'static,
    {
        tracing::info!(session.id = %self.session_id, project = %self.engine.project().name,
            agent.id = self.agent_id.as_deref().unwrap_or("(anonymous)"), "mcp server starting");
        let running = match ServiceExt::serve(self, transport).await {
            Ok(running) => running,
            Err(ServerInitializeError::ConnectionClosed(_)) => {
                // The client went away before initializing: nothing to serve.
                tracing::info!("mcp client closed the connection before initializing");
                return Ok(());
            }
            Err(err) => return Err(Error::Session(err.to_string())),
        };
        let reason = running.waiting().await.map_err(|err| Error::Session(err.to_string()))?;
        tracing::info!(reason = ?reason, "mcp session ended");
        Ok(())
    }

    fn list_secrets(&self) -> CallToolResult {
        let project = self.engine.project();
        match self.vault.secret_names(project) {
            Ok(secrets) => {
                tools::json_result(&SecretList { project: project.name.clone(), secrets })
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot list secret names");
                let message = format!("the vault cannot be read: {err}");
                tools::refusal_result(&Refusal::new(Slug::VaultUnavailable, message))
            }
        }
    }

    async fn api_call(&self, arguments: Option<&JsonObject>) -> Result<CallToolResult, ErrorData> {
        let config = self.engine.config();
        let spec = match tools::api_call_spec(arguments, config.max_body_bytes) {
            Ok(spec) => self.as_caller(spec),
            Err(refusal) => {
                let partial = self.as_caller(tools::partial_spec(arguments));
                self.engine.refuse_early(&partial, &refusal);
                return Err(tools::protocol_error(&refusal));
            }
        };

        let called = self.engine.call(spec).await;
        self.engine.flush_token_use();
        let forwarded = match called {
            Ok(forwarded) => forwarded,
            Err(refusal) => return Ok(tools::refusal_result(&refusal)),
        };

        let limit = tools::MAX_RESULT_BODY;
        let body = match tools::collect_body(forwarded.body, limit, config.upstream_timeout).await {
            Ok(body) => body,
            Err(refusal) => return Ok(tools::refusal_result(&refusal)),
        };
        let redacted = forwarded.redacted.load(std::sync::atomic::Ordering::Relaxed);
        let result = ApiCallResult::new(forwarded.status, &forwarded.headers, &body, redacted);
        Ok(tools::json_result(&result))
    }

    /// The spec with this run's identity and session id.
    fn as_caller(&self, spec: CallSpec) -> CallSpec {
        CallSpec {
            agent_id: self.agent_id.clone(),
            agent_token: self.agent_token.clone(),
            session_id: Some(self.session_id.clone()),
            ..spec
        }
    }
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("agentsecrets", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools::definitions()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        tools::definition(name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let result = match request.name.as_ref() {
            tools::LIST_SECRETS => self.list_secrets(),
            tools::API_CALL => self.api_call(request.arguments.as_ref()).await?,
            other => {
                tracing::info!(tool = other, "unknown tool requested");
                return Err(tools::unknown_tool(other));
            }
        };
        Ok(result.into())
    }
}
