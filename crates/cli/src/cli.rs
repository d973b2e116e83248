//! The command line's shape: every command, flag and environment fallback.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// A credential proxy for AI agents: agents name secrets, agentsecrets makes the call.
#[derive(Debug, Parser)]
#[command(name = "agentsecrets", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the home, vault and default project (safe to run again).
    Init(InitArgs),
    /// Show where things are and whether the proxy runs.
    Status,
    /// Manage projects.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Manage secrets of the current project.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Workspace settings and the domain allowlist.
    #[command(subcommand)]
    Workspace(WorkspaceCommand),
    /// Make one API call with secrets injected (through the running proxy, or in-process).
    Call(Box<CallArgs>),
    /// Run a command with the project's secrets as environment variables.
    Env(EnvArgs),
    /// Run, inspect and stop the local proxy.
    #[command(subcommand)]
    Proxy(ProxyCommand),
    /// Read the audit log.
    #[command(subcommand)]
    Log(LogCommand),
    /// Agents and their tokens.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// The MCP server over stdio, and its registration with MCP clients.
    #[command(subcommand)]
    Mcp(McpCommand),
}

/// `agent ...`.
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Register an agent and issue its first token.
    Register(Box<IssueArgs>),
    /// Issue, list and revoke agent tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Every agent registered or seen in the log.
    List {
        /// Accepted for compatibility; agents belong to the workspace.
        #[arg(long)]
        project: Option<String>,
    },
    /// Capability contracts: which secrets, domains and methods an agent may use.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Delete an agent and revoke all its tokens (its log entries stay).
    Delete {
        /// Agent name.
        name: String,
        /// Accepted for compatibility; nothing is ever asked.
        #[arg(long, alias = "yes")]
        confirm: bool,
    },
}

/// `agent policy ...`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Set an agent's contract; each rule given replaces that rule, the others stay.
    Set(Box<PolicySetArgs>),
    /// Show an agent's contract and its change history.
    Show {
        /// Agent name.
        name: String,
        /// Output format: text or json.
        #[arg(long, value_enum, default_value = "text")]
        output: CallOutput,
    },
    /// The allowed and denied secrets, in the form the official SDK reads.
    Get {
        /// Agent name.
        name: String,
    },
    /// Remove an agent's contract (it then gets the workspace's rules only).
    Clear {
        /// Agent name.
        name: String,
        /// Accepted for compatibility; nothing is ever asked.
        #[arg(long, alias = "yes")]
        confirm: bool,
    },
}

/// `agent policy set`.
#[derive(Debug, Args)]
pub struct PolicySetArgs {
    /// Agent name.
    pub name: String,
    /// A secret the agent may use (repeat, or K1,K2); once any is given, only these.
    #[arg(long, alias = "allow", value_delimiter = ',', value_name = "KEY")]
    pub allow_secret: Vec<String>,
    /// A secret the agent may never use; deny wins over allow.
    #[arg(long, alias = "deny", value_delimiter = ',', value_name = "KEY")]
    pub deny_secret: Vec<String>,
    /// A host the agent may reach: api.example.com or *.example.com (within the
    /// workspace allowlist).
    #[arg(long, value_delimiter = ',', value_name = "DOMAIN")]
    pub allow_domain: Vec<String>,
    /// An HTTP method the agent may use.
    #[arg(long, value_delimiter = ',', value_name = "METHOD")]
    pub allow_method: Vec<String>,
    /// At most N calls per minute: N/min, or none to lift the limit.
    #[arg(long, value_name = "N/min")]
    pub rate: Option<String>,
    /// enforce (refuse what the contract does not allow) or report (serve it, and log
    /// it as capability_denied_report).
    #[arg(long, value_name = "enforce|report")]
    pub mode: Option<String>,
    /// Replace the whole contract: rules not given are reset (to no restriction), in one
    /// change, instead of kept.
    #[arg(long)]
    pub replace: bool,
    /// Accepted for compatibility; nothing is ever asked.
    #[arg(long, alias = "yes")]
    pub confirm: bool,
}

/// `agent token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a token; the value is shown once.
    Issue(Box<IssueArgs>),
    /// List tokens (never their values).
    List {
        /// Only this agent's tokens.
        name: Option<String>,
    },
    /// Revoke a token by id or value, or all of an agent's tokens with --all.
    Revoke {
        /// `TOKEN_ID`, an `agt_...` value, or `NAME TOKEN_ID`; with --all, `NAME`.
        #[arg(num_args = 0..=2, value_name = "TOKEN")]
        targets: Vec<String>,
        /// The agent the token belongs to.
        #[arg(long)]
        agent: Option<String>,
        /// Revoke every token of the agent.
        #[arg(long)]
        all: bool,
        /// Accepted for compatibility; nothing is ever asked.
        #[arg(long, alias = "yes")]
        confirm: bool,
    },
}

/// `agent token issue` and `agent register`.
#[derive(Debug, Args)]
pub struct IssueArgs {
    /// Agent name.
    pub name: String,
    /// Label such as `production`.
    #[arg(long)]
    pub label: Option<String>,
    /// Lifetime such as 30d, 12h or 90m.
    #[arg(long, conflicts_with = "expires")]
    pub ttl: Option<String>,
    /// Expiry date (YYYY-MM-DD) or RFC 3339 time.
    #[arg(long)]
    pub expires: Option<String>,
    /// Environment name (accepted for compatibility; tokens are workspace-wide).
    #[arg(long)]
    pub env: Option<String>,
    /// Project (accepted for compatibility; agents belong to the workspace).
    #[arg(long)]
    pub project: Option<String>,
    /// Save the token so `--token <NAME>_TOKEN` finds it.
    #[arg(long)]
    pub save_token: bool,
    /// Output format: text or json.
    #[arg(long, value_enum, default_value = "text")]
    pub output: CallOutput,
}

/// `init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Never ask anything (the default when stdin or stdout is not a terminal).
    #[arg(long)]
    pub non_interactive: bool,
}

/// `project ...`.
#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// Create a project.
    Create {
        /// Project name.
        name: String,
    },
    /// List projects.
    List,
    /// Link the current directory to a project (writes .agentsecrets/project.json).
    Use {
        /// Project name.
        name: String,
    },
    /// Delete a project and its secrets.
    Delete {
        /// Project name.
        name: String,
        /// Delete even when the project still holds secrets.
        #[arg(long, alias = "confirm", alias = "yes")]
        force: bool,
    },
}

/// `secrets ...`.
#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Store secrets: `KEY=value ...`, or `KEY` alone to read the value from stdin when
    /// piped, else from a hidden prompt (so it stays out of shell history).
    Set {
        /// `KEY=value` or `KEY`.
        #[arg(required = true, value_name = "KEY[=VALUE]")]
        entries: Vec<String>,
    },
    /// Print one secret's value (for people; agents should use call or env).
    Get {
        /// Secret name.
        key: String,
    },
    /// List secret names (never values).
    List,
    /// Delete a secret.
    Delete {
        /// Secret name.
        key: String,
    },
    /// Import a dotenv file (or stdin when FILE is omitted or `-`).
    Import {
        /// The file to import.
        file: Option<PathBuf>,
    },
    /// Print the names of the project's secrets as `KEY=` lines, ready for a .env template.
    ExportNames,
}

/// `workspace ...`.
#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// The domains the proxy may call.
    #[command(subcommand)]
    Allowlist(AllowlistCommand),
    /// Change workspace settings.
    Update(UpdateArgs),
}

/// `workspace update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Refuse callers below the minimum identity (true), only report them (report), or
    /// serve everyone (false).
    #[arg(long, value_name = "true|false|report")]
    pub strict_identity: Option<String>,
    /// The minimum identity under strict mode: declared (default) or issued.
    #[arg(long, value_name = "LEVEL")]
    pub min_identity: Option<String>,
    /// Whether a declared name's capability contract applies (enforce, the default: it
    /// can only narrow what the name gets) or is ignored.
    #[arg(long, value_name = "enforce|ignore")]
    pub declared_contracts: Option<String>,
    /// The secrets anonymous callers, and declared names without a contract, may use:
    /// K1,K2, none, or all (the default).
    #[arg(long, value_name = "K1,K2|none|all")]
    pub anonymous_secrets: Option<String>,
}

/// `workspace allowlist ...`.
#[derive(Debug, Subcommand)]
pub enum AllowlistCommand {
    /// Allow domains.
    Add {
        /// Hosts such as api.stripe.com (no scheme, path or port).
        #[arg(required = true)]
        domains: Vec<String>,
    },
    /// Remove a domain.
    Remove {
        /// The host to remove.
        domain: String,
    },
    /// List allowed domains.
    List,
    /// Show every change made to the allowlist.
    Log,
}

/// Output of `call`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CallOutput {
    /// `HTTP <code>`, a blank line, the body.
    Text,
    /// One JSON object.
    Json,
}

/// `call`.
#[derive(Debug, Args)]
pub struct CallArgs {
    /// Target URL (https, or http to loopback with local HTTP allowed).
    #[arg(long)]
    pub url: String,
    /// HTTP method.
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// Request body.
    #[arg(long)]
    pub body: Option<String>,
    /// Inject KEY as `Authorization: Bearer <value>`.
    #[arg(long, value_name = "KEY")]
    pub bearer: Vec<String>,
    /// Inject KEY (`user:pass`) as `Authorization: Basic ...`.
    #[arg(long, value_name = "KEY")]
    pub basic: Vec<String>,
    /// Inject KEY as header NAME.
    #[arg(long, value_name = "NAME=KEY")]
    pub header: Vec<String>,
    /// Inject KEY as query parameter NAME.
    #[arg(long, value_name = "NAME=KEY")]
    pub query: Vec<String>,
    /// Inject KEY at a dotted path of the JSON body.
    #[arg(long, value_name = "PATH=KEY")]
    pub body_field: Vec<String>,
    /// Inject KEY as a form field.
    #[arg(long, value_name = "FIELD=KEY")]
    pub form_field: Vec<String>,
    /// Declare the calling agent's name.
    #[arg(long, env = "AGENTSECRETS_AGENT_ID", value_name = "NAME")]
    pub agent_id: Option<String>,
    /// Agent token (`agt_...`), or a `<NAME>_TOKEN` reference.
    #[arg(long, env = "AGENTSECRETS_TOKEN", value_name = "TOKEN")]
    pub token: Option<String>,
    /// Session id tying this call to an agent run (`env` and `mcp serve` set
    /// AGENTSECRETS_SESSION_ID for the programs they run).
    #[arg(long, env = "AGENTSECRETS_SESSION_ID", value_name = "ID")]
    pub session_id: Option<String>,
    /// Print the decision the proxy would make (allowed, or the refusal and its rule)
    /// without reading any secret or calling the upstream.
    #[arg(long)]
    pub explain: bool,
    /// Output format: text or json.
    #[arg(long, value_enum, default_value = "text")]
    pub output: CallOutput,
    /// Seconds to wait for the whole call.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

/// `env`.
#[derive(Debug, Args)]
pub struct EnvArgs {
    /// Declare the calling agent's name.
    #[arg(long, env = "AGENTSECRETS_AGENT_ID", value_name = "NAME")]
    pub agent_id: Option<String>,
    /// Agent token (`agt_...`), or a `<NAME>_TOKEN` reference.
    #[arg(long, env = "AGENTSECRETS_TOKEN", value_name = "TOKEN")]
    pub token: Option<String>,
    /// Inject only these secrets (comma-separated names).
    #[arg(long, value_delimiter = ',', value_name = "K1,K2")]
    pub only: Vec<String>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `proxy ...`.
#[derive(Debug, Subcommand)]
pub enum ProxyCommand {
    /// Run the proxy in the foreground.
    Start(ProxyStartArgs),
    /// Is the proxy running? Port, pid, uptime, calls served.
    Status,
    /// Stop the running proxy.
    Stop,
    /// Recent audit entries (JSON Lines when stdout is not a terminal).
    Logs(Box<LogFilters>),
}

/// `proxy start`.
#[derive(Debug, Args)]
pub struct ProxyStartArgs {
    /// Port on 127.0.0.1.
    #[arg(long, env = "AGENTSECRETS_PORT", default_value_t = 8765)]
    pub port: u16,
    /// Allow plain-HTTP calls to loopback targets (for local testing).
    #[arg(
        long,
        env = "AGENTSECRETS_ALLOW_LOCAL_HTTP",
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    pub allow_local_http: bool,
    /// Do not require X-AS-Session-Token on /proxy (any local process may call).
    #[arg(long)]
    pub no_session_token: bool,
    /// Run in the background (output in $AGENTSECRETS_HOME/proxy.log); return once the
    /// proxy answers /health.
    #[arg(long, env = "AGENTSECRETS_PROXY_DETACH")]
    #[arg(value_parser = clap::builder::FalseyValueParser::new())]
    pub detach: bool,
}

/// `log ...`.
#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// List audit entries.
    List(Box<LogFilters>),
    /// Every field of one entry, the policy it ran under, and its chain position.
    Detail {
        /// The entry's id (`log_...`).
        id: String,
    },
    /// Walk the hash chain and report the first broken, missing or reordered entry.
    Verify,
    /// Append synthetic entries (for benchmarks and trying the log commands).
    #[command(hide = true)]
    Seed {
        /// How many entries.
        #[arg(long, default_value_t = 1000)]
        count: u64,
        /// Spread them over this many days before now.
        #[arg(long, default_value_t = 30)]
        days: u32,
    },
    /// Delete entries older than a date, keeping the chain verifiable.
    Prune {
        /// Entries before this are removed: YYYY-MM-DD, RFC 3339, or an age such as 90d.
        #[arg(long)]
        before: String,
    },
    /// Calls by identity, top agents, secrets and domains, refusals, durations.
    Summary(Box<SummaryArgs>),
    /// Write matching entries as CSV, JSON or JSON Lines, streaming.
    Export(Box<ExportArgs>),
}

/// `log summary`.
#[derive(Debug, Args)]
pub struct SummaryArgs {
    /// Only entries since: 15m, 2h, 7d or an RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// Group by session instead: one line per agent run (first and last call, calls,
    /// agents, secrets, blocked).
    #[arg(long, value_enum)]
    pub by: Option<SummaryBy>,
    /// Print JSON instead of text.
    #[arg(long, value_enum)]
    pub format: Option<SummaryFormat>,
}

/// Groupings of `log summary --by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SummaryBy {
    /// One row per session id.
    Session,
}

/// Output of `log summary`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SummaryFormat {
    /// Text for people.
    Text,
    /// One JSON object.
    Json,
}

/// `log export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// csv, json or jsonl.
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// Write to this file (atomically) instead of stdout.
    #[arg(long)]
    pub output: Option<std::path::PathBuf>,
    /// Which entries.
    #[command(flatten)]
    pub filters: EntryFilters,
}

/// Formats of `log export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// CSV (RFC 4180) with a header row.
    Csv,
    /// One JSON array.
    Json,
    /// One JSON object per line.
    Jsonl,
}

/// Output of `log list` and `proxy logs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One line per entry.
    Table,
    /// A JSON array.
    Json,
    /// One JSON object per line.
    Jsonl,
    /// CSV with a header row.
    Csv,
}

/// Which entries `log list`, `proxy logs` and `log export` select; all combine.
#[derive(Debug, Args)]
pub struct EntryFilters {
    /// Only these identity levels (anonymous, declared, issued); repeatable.
    #[arg(long, value_name = "LEVEL")]
    pub identity: Vec<String>,
    /// Only this agent.
    #[arg(long)]
    pub agent: Option<String>,
    /// Only calls made with this token id (`tok_...`).
    #[arg(long, value_name = "TOKEN_ID")]
    pub token: Option<String>,
    /// Only calls that used this secret.
    #[arg(long)]
    pub secret: Option<String>,
    /// Only calls to this domain.
    #[arg(long)]
    pub domain: Option<String>,
    /// Only this status: OK, BLOCKED or ERROR.
    #[arg(long)]
    pub status: Option<String>,
    /// Only this reason slug.
    #[arg(long)]
    pub reason: Option<String>,
    /// Only this session id.
    #[arg(long)]
    pub session: Option<String>,
    /// Only entries since: 15m, 2h, 7d or an RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// Only entries before: 15m, 2h, 7d or an RFC 3339 time.
    #[arg(long)]
    pub until: Option<String>,
}

/// Options of `log list` and `proxy logs`.
#[derive(Debug, Args)]
pub struct LogFilters {
    /// Which entries.
    #[command(flatten)]
    pub entries: EntryFilters,
    /// The most recent N entries.
    #[arg(long, default_value_t = 50)]
    pub last: usize,
    /// Output format (default: table on a terminal, JSON Lines otherwise).
    #[arg(long)]
    pub format: Option<LogFormat>,
    /// Keep printing new entries as any process writes them, until interrupted.
    #[arg(long)]
    pub tail: bool,
}

/// `mcp ...`.
#[derive(Debug, Subcommand)]
pub enum McpCommand {
    /// Serve MCP on stdin and stdout (an MCP client starts this; stdout is protocol only).
    Serve(McpServeArgs),
    /// Register `agentsecrets mcp serve` in an MCP client's configuration file.
    Install(McpInstallArgs),
}

/// `mcp serve`.
#[derive(Debug, Args)]
pub struct McpServeArgs {
    /// Declare the calling agent's name.
    #[arg(long, env = "AGENTSECRETS_AGENT_ID", value_name = "NAME")]
    pub agent_id: Option<String>,
    /// Agent token (`agt_...`), or a `<NAME>_TOKEN` reference.
    #[arg(long, env = "AGENTSECRETS_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Allow plain-HTTP calls to loopback targets (for local testing).
    #[arg(
        long,
        env = "AGENTSECRETS_ALLOW_LOCAL_HTTP",
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    pub allow_local_http: bool,
}

/// `mcp install`.
#[derive(Debug, Args)]
pub struct McpInstallArgs {
    /// The MCP client to register with.
    #[arg(long, value_enum, default_value = "claude")]
    pub client: McpClient,
    /// Print the change and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The client's configuration file (default: where the client keeps it).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

/// MCP clients whose configuration `mcp install` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum McpClient {
    /// Claude Desktop.
    Claude,
    /// Cursor.
    Cursor,
}
