//! `agentsecrets mcp serve` driven by a real MCP client (`rmcp`'s, over the child's
//! stdio), the raw protocol channel, and `agentsecrets mcp install` on client
//! configuration files.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceError, ServiceExt};
use serde_json::{Value, json};
use support::{MARKER, TestHome, Upstream, describe};

const BEARER: &str = "tok-mcp-bearer-01";
const HEADER: &str = "hdr-mcp-02";
const QUERY: &str = "qry-mcp-03";
const BODY: &str = "body-mcp-04";

/// JSON-RPC "invalid params", the code of an unknown tool or bad arguments.
const INVALID_PARAMS: i32 = -32602;

/// A home with four secrets and loopback allowlisted.
fn home() -> TestHome {
    let home = TestHome::new();
    home.set_secrets(&[
        ("MCP_BEARER", BEARER),
        ("MCP_HEADER", HEADER),
        ("MCP_QUERY", QUERY),
        ("MCP_BODY", BODY),
    ]);
    home.allow(&["127.0.0.1"]);
    home
}

/// `agentsecrets mcp serve` in `home`, allowed to call loopback over plain HTTP, its
/// identity declared through the environment.
fn serve_command(home: &TestHome) -> std::process::Command {
    let mut cmd = home.command(&["mcp", "serve"]);
    cmd.env("AGENTSECRETS_ALLOW_LOCAL_HTTP", "1").env("AGENTSECRETS_AGENT_ID", "mcp-tester");
    cmd
}

type Client = RunningService<RoleClient, ()>;

/// Starts the server as a child process and completes the MCP handshake with it.
async fn connect(home: &TestHome) -> Client {
    let command = tokio::process::Command::from(serve_command(home));
    let transport = TokioChildProcess::new(command).expect("spawn agentsecrets mcp serve");
    tokio::time::timeout(Duration::from_secs(60), ().serve(transport))
        .await
        .expect("the server initializes in time")
        .expect("the MCP handshake succeeds")
}

async fn call(
    client: &Client,
    tool: &str,
    arguments: Value,
) -> Result<CallToolResult, ServiceError> {
    let arguments = arguments.as_object().cloned().expect("arguments are an object");
    let params = CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments);
    tokio::time::timeout(Duration::from_secs(60), client.call_tool(params))
        .await
        .expect("the tool answers in time")
}

/// The JSON text of a tool result's first content block.
fn result_json(result: &CallToolResult) -> Value {
    let text = &result.content.first().and_then(|c| c.as_text()).expect("text content").text;
    serde_json::from_str(text).unwrap_or_else(|e| panic!("tool text is JSON ({e}): {text}"))
}

fn protocol_error_code(result: Result<CallToolResult, ServiceError>) -> i32 {
    match result {
        Err(ServiceError::McpError(error)) => error.code.0,
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime")
}

#[test]
fn a_real_mcp_client_lists_tools_and_calls_both_through_the_engine() {
    let home = home();
    let upstream = Upstream::start();

    runtime().block_on(async {
        let client = connect(&home).await;
        let server = client.peer_info().and_then(|info| info.server_info.clone());
        assert_eq!(server.map(|s| s.name).as_deref(), Some("agentsecrets"));

        // tools/list: both tools, each with an object input schema.
        let tools = client.list_all_tools().await.expect("tools/list");
        let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
        names.sort_unstable();
        assert_eq!(names, ["api_call", "list_secrets"]);
        let api_call = tools.iter().find(|t| t.name == "api_call").expect("api_call");
        assert_eq!(api_call.input_schema["required"], json!(["url", "injections"]));

        // list_secrets: names only.
        let listed = call(&client, "list_secrets", json!({})).await.expect("list_secrets");
        assert_ne!(listed.is_error, Some(true), "{listed:?}");
        let listed_json = result_json(&listed);
        assert_eq!(
            listed_json["secrets"],
            json!(["MCP_BEARER", "MCP_BODY", "MCP_HEADER", "MCP_QUERY"])
        );
        let listed_text = format!("{listed:?}");
        for value in [BEARER, HEADER, QUERY, BODY] {
            assert!(!listed_text.contains(value), "a value leaked: {listed_text}");
        }

        // api_call with a bearer injection: the upstream gets the value, the agent sees
        // its echo redacted.
        let reflected = call(
            &client,
            "api_call",
            json!({ "url": upstream.url("/reflect"), "injections": { "bearer": "MCP_BEARER" } }),
        )
        .await
        .expect("api_call");
        assert_ne!(reflected.is_error, Some(true), "{reflected:?}");
        assert_eq!(
            upstream.last().header("authorization"),
            Some(format!("Bearer {BEARER}").as_str())
        );
        let answer = result_json(&reflected);
        assert_eq!(answer["status"], 200);
        assert_eq!(answer["redacted"], true);
        assert!(answer["body"].as_str().expect("body").contains(MARKER), "{answer}");
        assert_eq!(answer["headers"]["x-reflected"], MARKER);
        assert_eq!(answer["headers"]["x-plain"], "kept");
        assert!(answer["headers"].get("x-as-redacted").is_none(), "{answer}");
        assert!(!format!("{reflected:?}").contains(BEARER), "the value leaked: {answer}");

        // Named styles, method, headers and body all reach the upstream.
        let styled = call(
            &client,
            "api_call",
            json!({
                "url": upstream.url("/echo"),
                "method": "post",
                "headers": { "X-Trace": "trace-1" },
                "body": { "auth": {}, "n": 1 },
                "injections": {
                    "header:X-Api-Key": "MCP_HEADER",
                    "query:api_key": "MCP_QUERY",
                    "body:auth.token": "MCP_BODY"
                }
            }),
        )
        .await
        .expect("api_call with named styles");
        assert_ne!(styled.is_error, Some(true), "{styled:?}");
        let received = upstream.last();
        assert_eq!(received.method, "POST");
        assert_eq!(received.header("x-trace"), Some("trace-1"));
        assert_eq!(received.header("x-api-key"), Some(HEADER));
        assert!(received.query_pairs().contains(&("api_key".to_owned(), QUERY.to_owned())));
        let sent: Value = serde_json::from_slice(&received.body).expect("a JSON body");
        assert_eq!(sent, json!({ "auth": { "token": BODY }, "n": 1 }));

        // A domain off the allowlist: an MCP tool error with the slug, nothing sent.
        let before = upstream.count();
        let blocked = call(
            &client,
            "api_call",
            json!({
                "url": "https://not-allowed.example/v1",
                "injections": { "bearer": "MCP_BEARER" }
            }),
        )
        .await
        .expect("a refusal is a tool result, not a protocol error");
        assert_eq!(blocked.is_error, Some(true), "{blocked:?}");
        let refusal = result_json(&blocked);
        assert_eq!(refusal["error"], "domain_not_in_allowlist");
        assert_eq!(refusal["domain"], "not-allowed.example");
        assert!(refusal["message"].as_str().expect("message").contains("allowlist"));
        assert_eq!(upstream.count(), before);

        // A missing secret is a tool error too.
        let missing = call(
            &client,
            "api_call",
            json!({ "url": upstream.url("/echo"), "injections": { "bearer": "NO_SUCH_KEY" } }),
        )
        .await
        .expect("tool result");
        assert_eq!(missing.is_error, Some(true));
        assert_eq!(result_json(&missing)["error"], "secret_not_found");

        // An unknown tool and missing arguments are protocol errors...
        let unknown = call(&client, "no_such_tool", json!({})).await;
        assert_eq!(protocol_error_code(unknown), INVALID_PARAMS);
        let no_injection = call(&client, "api_call", json!({ "url": upstream.url("/x") })).await;
        assert_eq!(protocol_error_code(no_injection), INVALID_PARAMS);

        // ...and the server stays up for the next request.
        let again = call(&client, "list_secrets", json!({})).await.expect("still serving");
        assert_eq!(result_json(&again)["secrets"], listed_json["secrets"]);

        client.cancel().await.expect("close the session");
    });

    // The audit log: every api_call, transport mcp, one session id for the run.
    let entries: Vec<Value> =
        home.audit().into_iter().filter(|e| e["transport"] == "mcp").collect();
    assert_eq!(entries.len(), 5, "{entries:#?}");
    let session = entries[0]["session_id"].as_str().expect("a session id").to_owned();
    assert!(session.starts_with("mcp_"), "{session}");
    for entry in &entries {
        assert_eq!(entry["session_id"], session.as_str(), "{entry}");
    }
    let called = &entries[0];
    assert_eq!(called["status"], "OK");
    assert_eq!(called["agent_id"], "mcp-tester");
    assert_eq!(called["identity_level"], "declared");
    assert_eq!(called["secret_keys"], json!(["MCP_BEARER"]));
    assert_eq!(called["redacted"], true);
    assert_eq!(entries[2]["status"], "BLOCKED");
    assert_eq!(entries[2]["reason"], "domain_not_in_allowlist");
    assert_eq!(entries[3]["reason"], "secret_not_found");
    assert_eq!(entries[4]["reason"], "bad_request");
}

/// Reads one JSON-RPC message from the server's stdout.
fn read_message(stdout: &mut impl BufRead) -> Value {
    let mut line = String::new();
    let read = stdout.read_line(&mut line).expect("read stdout");
    assert!(read > 0, "the server closed stdout");
    let message: Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("stdout carries only JSON-RPC ({e}): {line:?}"));
    assert_eq!(message["jsonrpc"], "2.0", "{message}");
    message
}

/// Kills the server if the test hangs on it.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn stdout_carries_protocol_only_and_bad_messages_do_not_stop_the_server() {
    let home = home();
    let child = serve_command(&home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn agentsecrets mcp serve");
    let mut child = KillOnDrop(child);
    let mut stdin = child.0.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.0.stdout.take().expect("stdout"));
    let mut send = |message: &str| {
        stdin.write_all(message.as_bytes()).expect("write");
        stdin.write_all(b"\n").expect("write");
        stdin.flush().expect("flush");
    };
    let tool_call = |id: u64, name: &str, arguments: Value| {
        let params = json!({ "name": name, "arguments": arguments });
        json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params }).to_string()
    };

    let initialize = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": { "name": "raw", "version": "0" }
        }
    });
    send(&initialize.to_string());
    let initialized = read_message(&mut stdout);
    assert_eq!(initialized["id"], 1);
    assert_eq!(initialized["result"]["serverInfo"]["name"], "agentsecrets");
    send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);

    // Not JSON at all: a parse error with a null id, and the server carries on.
    send("this is { not json");
    let parse_error = read_message(&mut stdout);
    assert_eq!(parse_error["error"]["code"], -32700, "{parse_error}");
    assert!(parse_error["id"].is_null(), "{parse_error}");
    // JSON, but not a JSON-RPC message: an Invalid Request error.
    send(r#"{"hello":"world"}"#);
    let invalid = read_message(&mut stdout);
    assert_eq!(invalid["error"]["code"], -32600, "{invalid}");

    send(&tool_call(2, "nope", json!({})));
    let unknown = read_message(&mut stdout);
    assert_eq!(unknown["id"], 2);
    assert_eq!(unknown["error"]["code"], INVALID_PARAMS, "{unknown}");

    // A body over the engine's 10 MiB limit.
    let oversized = json!({
        "url": "https://a.example",
        "body": "x".repeat(11 * 1024 * 1024),
        "injections": { "bearer": "MCP_BEARER" }
    });
    send(&tool_call(3, "api_call", oversized));
    let too_large = read_message(&mut stdout);
    assert_eq!(too_large["id"], 3);
    assert_eq!(too_large["error"]["code"], INVALID_PARAMS, "{too_large}");
    assert_eq!(too_large["error"]["data"]["error"], "payload_too_large");

    send(&tool_call(4, "list_secrets", json!({})));
    let listed = read_message(&mut stdout);
    assert_eq!(listed["id"], 4);
    assert_eq!(listed["result"]["isError"], false, "{listed}");

    // Closing stdin ends the session; the server exits cleanly and has written nothing
    // more.
    drop(stdin);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).expect("read the rest");
    assert_eq!(rest, "", "stdout after the last answer");
    let status = child.0.wait().expect("wait");
    let mut stderr = String::new();
    if let Some(mut err) = child.0.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut err, &mut stderr);
    }
    assert!(status.success(), "exit {status}; stderr: {stderr}");
}

#[test]
fn a_bad_agent_id_is_a_usage_error_with_nothing_on_stdout() {
    let home = TestHome::new();
    let out = home.run(&["mcp", "serve", "--agent-id", "not a name!"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(out.stdout.is_empty(), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--agent-id"), "{}", describe(&out));
}

#[test]
fn a_client_that_leaves_before_initializing_ends_the_server_cleanly() {
    let home = home();
    // TestHome runs the binary with stdin from /dev/null: end of input at once.
    let out = home.run(&["mcp", "serve"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(out.stdout.is_empty(), "{}", describe(&out));
}

// ---------------------------------------------------------------------------------------
// mcp install
// ---------------------------------------------------------------------------------------

/// A client configuration as a user might have it: another server, other keys.
const EXISTING: &str = r#"{
  "globalShortcut": "Ctrl+Space",
  "mcpServers": {
    "filesystem": {
      "command": "npx",
      "args": ["-y", "@modelcontextprotocol/server-filesystem", "/tmp"]
    }
  },
  "theme": {"dark": true}
}
"#;

fn write_config(home: &TestHome, text: &str) -> PathBuf {
    let path = home.path().parent().expect("temp dir").join("claude_desktop_config.json");
    std::fs::write(&path, text).expect("write the config");
    path
}

fn install(home: &TestHome, path: &Path, extra: &[&str]) -> std::process::Output {
    let path = path.to_str().expect("utf-8 path");
    let mut args = vec!["mcp", "install", "--config", path];
    args.extend_from_slice(extra);
    home.run(&args)
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn exe() -> String {
    std::fs::canonicalize(support::bin()).expect("the binary").to_string_lossy().into_owned()
}

#[test]
fn install_dry_run_writes_nothing_then_merges_then_reports_unchanged() {
    let home = TestHome::new();
    let path = write_config(&home, EXISTING);
    let backup = PathBuf::from(format!("{}.bak", path.display()));

    let dry = install(&home, &path, &["--dry-run"]);
    assert!(dry.status.success(), "{}", describe(&dry));
    assert!(stdout(&dry).contains("would add mcpServers.agentsecrets"), "{}", describe(&dry));
    assert!(stdout(&dry).contains("nothing written"), "{}", describe(&dry));
    assert_eq!(std::fs::read_to_string(&path).expect("read"), EXISTING);
    assert!(!backup.exists());

    let added = install(&home, &path, &[]);
    assert!(added.status.success(), "{}", describe(&added));
    assert!(stdout(&added).contains("added mcpServers.agentsecrets"), "{}", describe(&added));
    let merged: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("JSON");
    let original: Value = serde_json::from_str(EXISTING).expect("JSON");
    assert_eq!(merged["globalShortcut"], original["globalShortcut"]);
    assert_eq!(merged["theme"], original["theme"]);
    assert_eq!(merged["mcpServers"]["filesystem"], original["mcpServers"]["filesystem"]);
    assert_eq!(
        merged["mcpServers"]["agentsecrets"],
        json!({
            "command": exe(),
            "args": ["mcp", "serve"],
            // The test's home is not the default one, so the client must be told of it.
            "env": { "AGENTSECRETS_HOME": home.path().to_str().expect("UTF-8 path") },
        })
    );
    assert_eq!(std::fs::read_to_string(&backup).expect("the backup"), EXISTING);

    let written = std::fs::read(&path).expect("read");
    let again = install(&home, &path, &[]);
    assert!(again.status.success(), "{}", describe(&again));
    assert!(stdout(&again).contains("unchanged"), "{}", describe(&again));
    assert_eq!(std::fs::read(&path).expect("read"), written);
}

#[test]
fn install_updates_a_stale_entry_and_keeps_its_other_fields() {
    let home = TestHome::new();
    let stale = r#"{"mcpServers": {"agentsecrets": {"command": "/old/agentsecrets",
        "args": ["mcp", "serve"], "env": {"AGENTSECRETS_AGENT_ID": "desk"}}}}"#;
    let path = write_config(&home, stale);

    let out = install(&home, &path, &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stdout(&out).contains("updated mcpServers.agentsecrets"), "{}", describe(&out));
    assert!(stdout(&out).contains("/old/agentsecrets"), "{}", describe(&out));
    let merged: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("JSON");
    let ours = &merged["mcpServers"]["agentsecrets"];
    assert_eq!(ours["command"], exe());
    assert_eq!(ours["env"]["AGENTSECRETS_AGENT_ID"], "desk");
    assert_eq!(ours["env"]["AGENTSECRETS_HOME"], home.path().to_str().expect("UTF-8 path"));
}

#[test]
fn install_refuses_a_config_that_is_not_json_and_leaves_it_untouched() {
    let home = TestHome::new();
    let broken = "{ \"mcpServers\": { \"x\": { \"command\": \"npx\", } \n";
    let path = write_config(&home, broken);

    let out = install(&home, &path, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid JSON"), "{}", describe(&out));
    assert_eq!(std::fs::read(&path).expect("read"), broken.as_bytes());
    let dir = path.parent().expect("dir");
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .expect("list")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("claude_desktop_config.json."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn install_for_cursor_creates_its_config_under_home() {
    let home = TestHome::new();
    let out = home.run(&["mcp", "install", "--client", "cursor"]);
    assert!(out.status.success(), "{}", describe(&out));
    // TestHome runs the binary with HOME set to its temporary directory.
    let path = home.path().parent().expect("temp dir").join(".cursor").join("mcp.json");
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("created")).expect("JSON");
    assert_eq!(written["mcpServers"]["agentsecrets"]["args"], json!(["mcp", "serve"]));
}
