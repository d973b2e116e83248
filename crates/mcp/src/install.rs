//! `mcp install`: register `agentsecrets mcp serve` in an MCP client's JSON
//! configuration.
//!
//! The file is merged, never rebuilt: other servers, other top-level keys and other
//! fields of our own entry (an `env` the user added, say) are kept byte for byte, in
//! their order. A file that is not a JSON object is refused and left untouched. Writing
//! goes through a temporary file renamed over the original, after the original has been
//! copied to `<file>.bak`.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::Error;

/// The key of our entry under `mcpServers`.
pub const SERVER_NAME: &str = "agentsecrets";

/// An MCP client whose configuration file we know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// Claude Desktop.
    Claude,
    /// Cursor.
    Cursor,
}

impl Client {
    /// The client's name as the command line spells it.
    pub fn name(self) -> &'static str {
        match self {
            Client::Claude => "claude",
            Client::Cursor => "cursor",
        }
    }

    /// The client's configuration file for the current user.
    pub fn config_path(self) -> Result<PathBuf, Error> {
        self.config_path_in(&|name| std::env::var(name).ok())
    }

    /// The client's configuration file, reading the environment through `env`.
    pub fn config_path_in(self, env: &dyn Fn(&str) -> Option<String>) -> Result<PathBuf, Error> {
        let var = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let home = var("HOME").or_else(|| var("USERPROFILE")).ok_or(Error::NoHome)?;
        let path = match self {
            Client::Cursor => home.join(".cursor").join("mcp.json"),
            Client::Claude if cfg!(target_os = "macos") => {
                home.join("Library/Application Support/Claude/claude_desktop_config.json")
            }
            Client::Claude if cfg!(windows) => var("APPDATA")
                .unwrap_or_else(|| home.join("AppData").join("Roaming"))
                .join("Claude")
                .join("claude_desktop_config.json"),
            Client::Claude => var("XDG_CONFIG_HOME")
                .filter(|dir| dir.is_absolute())
                .unwrap_or_else(|| home.join(".config"))
                .join("Claude")
                .join("claude_desktop_config.json"),
        };
        Ok(path)
    }
}

/// How a client starts our server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerEntry {
    /// Absolute path of the `agentsecrets` executable.
    pub command: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Variables set in the entry's `env` object (name, value), merged with the ones
    /// already there: the vault home, when it is not the default, so the client's server
    /// opens the same vault this install ran against.
    pub env: Vec<(String, String)>,
}

impl ServerEntry {
    /// The entry that runs `<exe> mcp serve`.
    pub fn for_exe(exe: &Path) -> ServerEntry {
        ServerEntry {
            command: exe.to_string_lossy().into_owned(),
            args: vec!["mcp".to_owned(), "serve".to_owned()],
            env: Vec::new(),
        }
    }

    /// This entry with `name=value` set in its `env` object.
    pub fn with_env(mut self, name: &str, value: &str) -> ServerEntry {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// What an install does to the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// There was no `agentsecrets` entry (or no file); one is added.
    Added,
    /// The entry ran another command or arguments; they are replaced.
    Updated,
    /// The entry already runs this executable with these arguments.
    Unchanged,
}

/// An install worked out in full but not yet written.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The configuration file.
    pub path: PathBuf,
    /// What changes.
    pub change: Change,
    /// Our entry as it was, compact JSON, when there was one.
    pub previous: Option<String>,
    /// Our entry as it will be, compact JSON.
    pub entry: String,
    /// Whether the file exists now.
    pub file_exists: bool,
    /// The file's new contents.
    pub contents: String,
}

/// Reads `path` (a missing file counts as empty) and works out the merge of `entry`.
pub fn plan(path: &Path, entry: &ServerEntry) -> Result<Plan, Error> {
    let (text, file_exists) = match fs::read_to_string(path) {
        Ok(text) => (text, true),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => (String::new(), false),
        Err(error) => return Err(Error::ConfigRead { path: path.to_owned(), error }),
    };
    let shape = |what: &'static str| Error::ConfigShape { path: path.to_owned(), what };
    let parse = |error: serde_json::Error| Error::ConfigParse { path: path.to_owned(), error };

    let mut top: IndexMap<String, Box<RawValue>> = if text.trim().is_empty() {
        IndexMap::new()
    } else {
        let value: Value = serde_json::from_str(&text).map_err(parse)?;
        if !value.is_object() {
            return Err(shape("the top level is not a JSON object"));
        }
        serde_json::from_str(&text).map_err(parse)?
    };
    let mut servers: IndexMap<String, Box<RawValue>> = match top.get("mcpServers") {
        None => IndexMap::new(),
        Some(raw) if raw.get().trim_start().starts_with('{') => {
            serde_json::from_str(raw.get()).map_err(parse)?
        }
        Some(_) => return Err(shape("mcpServers is not a JSON object")),
    };

    let previous = servers.get(SERVER_NAME).map(|raw| raw.get().to_owned());
    let (change, members) = merge_entry(previous.as_deref(), entry, &parse)?;
    let entry_text = render_object(&members, 4);
    // Compact, with the entry's own fields in their order.
    let compact = |text: &str| {
        serde_json::from_str::<IndexMap<String, Value>>(text)
            .ok()
            .and_then(|fields| serde_json::to_string(&fields).ok())
            .unwrap_or_else(|| text.to_owned())
    };

    servers.insert(SERVER_NAME.to_owned(), raw(&entry_text)?);
    top.insert("mcpServers".to_owned(), raw(&render_object(&servers, 2))?);
    let mut contents = render_object(&top, 0);
    contents.push('\n');

    Ok(Plan {
        path: path.to_owned(),
        change,
        previous: previous.as_deref().map(compact),
        entry: compact(&entry_text),
        file_exists,
        contents,
    })
}

/// Our entry with `command` and `args` set and every other field kept as it was, and
/// what that changes.
fn merge_entry(
    previous: Option<&str>,
    entry: &ServerEntry,
    parse: &dyn Fn(serde_json::Error) -> Error,
) -> Result<(Change, IndexMap<String, Box<RawValue>>), Error> {
    let command = Value::String(entry.command.clone());
    let args = Value::from(entry.args.clone());
    let mut members: IndexMap<String, Box<RawValue>> = match previous {
        Some(text) if text.trim_start().starts_with('{') => {
            serde_json::from_str(text).map_err(parse)?
        }
        _ => IndexMap::new(),
    };
    let same = |name: &str, want: &Value| {
        members.get(name).and_then(|raw| serde_json::from_str::<Value>(raw.get()).ok()).as_ref()
            == Some(want)
    };
    let env = merged_env(members.get("env").map(|raw| raw.get()), &entry.env);
    let change = match previous {
        None => Change::Added,
        Some(_)
            if same("command", &command)
                && same("args", &args)
                && env.as_ref().is_none_or(|env| same("env", &Value::from_iter(env.clone()))) =>
        {
            Change::Unchanged
        }
        Some(_) => Change::Updated,
    };
    members.insert("command".to_owned(), raw(&command.to_string())?);
    members.insert("args".to_owned(), raw(&args.to_string())?);
    if let Some(env) = env {
        let text = serde_json::to_string(&env).map_err(parse)?;
        members.insert("env".to_owned(), raw(&text)?);
    }
    Ok((change, members))
}

/// The entry's `env` object with `wanted` set in it, keeping the user's other variables in
/// their order; `None` when there is nothing to set. An `env` that is not an object is
/// replaced.
fn merged_env(
    previous: Option<&str>,
    wanted: &[(String, String)],
) -> Option<IndexMap<String, Value>> {
    if wanted.is_empty() {
        return None;
    }
    let mut env: IndexMap<String, Value> =
        previous.and_then(|text| serde_json::from_str(text).ok()).unwrap_or_default();
    for (name, value) in wanted {
        env.insert(name.clone(), Value::String(value.clone()));
    }
    Some(env)
}

/// Writes a plan: the old file to `<file>.bak`, the new contents through a temporary file
/// renamed over the original. Returns the backup's path when one was made. An unchanged
/// plan writes nothing.
pub fn apply(plan: &Plan) -> Result<Option<PathBuf>, Error> {
    if plan.change == Change::Unchanged {
        return Ok(None);
    }
    // A configuration managed as a symlink (dotfiles) is written through the link.
    let path = match fs::symlink_metadata(&plan.path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            fs::canonicalize(&plan.path).unwrap_or_else(|_| plan.path.clone())
        }
        _ => plan.path.clone(),
    };
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |error| Error::ConfigWrite { path, error }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(write_err(dir))?;
    }

    let backup = if plan.file_exists {
        let backup = with_suffix(&path, ".bak");
        fs::copy(&path, &backup).map_err(write_err(&backup))?;
        Some(backup)
    } else {
        None
    };

    let temp = with_suffix(&path, &format!(".tmp-{}", std::process::id()));
    let written =
        write_new(&temp, plan.contents.as_bytes(), &path).and_then(|()| fs::rename(&temp, &path));
    if let Err(error) = written {
        let _ = fs::remove_file(&temp);
        return Err(Error::ConfigWrite { path, error });
    }
    Ok(backup)
}

/// Creates `temp` with `bytes`, flushed to disk, with the permissions of `like` when it
/// exists.
fn write_new(temp: &Path, bytes: &[u8], like: &Path) -> std::io::Result<()> {
    let mut file = fs::OpenOptions::new().write(true).create_new(true).open(temp)?;
    file.write_all(bytes)?;
    if let Ok(meta) = fs::metadata(like) {
        file.set_permissions(meta.permissions())?;
    }
    file.sync_all()
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// A JSON object written two spaces per level, with each member's value as its raw text.
/// `depth` is the indentation of the line the object starts on.
fn render_object(members: &IndexMap<String, Box<RawValue>>, depth: usize) -> String {
    if members.is_empty() {
        return "{}".to_owned();
    }
    let inner = " ".repeat(depth + 2);
    let mut out = String::from("{\n");
    for (i, (key, value)) in members.iter().enumerate() {
        let key = serde_json::to_string(key).unwrap_or_default();
        let comma = if i + 1 < members.len() { "," } else { "" };
        out.push_str(&format!("{inner}{key}: {}{comma}\n", value.get().trim()));
    }
    out.push_str(&" ".repeat(depth));
    out.push('}');
    out
}

fn raw(text: &str) -> Result<Box<RawValue>, Error> {
    // The text was just produced from valid JSON pieces; a failure here is a bug, reported
    // as a shape error rather than a panic.
    RawValue::from_string(text.to_owned()).map_err(|_| Error::ConfigShape {
        path: PathBuf::new(),
        what: "internal error: the merged configuration is not valid JSON",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> ServerEntry {
        ServerEntry::for_exe(Path::new("/usr/local/bin/agentsecrets"))
    }

    fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let path = dir.path().join("config.json");
        fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn a_missing_file_gets_our_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join("mcp.json");
        let plan = plan(&path, &entry()).expect("plan");
        assert_eq!(plan.change, Change::Added);
        assert!(!plan.file_exists);
        let value: Value = serde_json::from_str(&plan.contents).expect("json");
        assert_eq!(
            value["mcpServers"]["agentsecrets"]["args"],
            serde_json::json!(["mcp", "serve"])
        );

        assert_eq!(apply(&plan).expect("apply"), None);
        assert_eq!(fs::read_to_string(&path).expect("read"), plan.contents);
    }

    #[test]
    fn other_servers_and_keys_keep_their_text_and_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let original = "{\n  \"zeta\": 1,\n  \"mcpServers\": {\n    \"other\": {\n      \
                        \"command\": \"npx\",\n      \"args\": [\"-y\", \"x\"]\n    }\n  },\n  \
                        \"alpha\": {\"b\": 2, \"a\": 1}\n}\n";
        let path = write(&dir, original);
        let plan = plan(&path, &entry()).expect("plan");
        assert_eq!(plan.change, Change::Added);
        assert!(plan.contents.contains("\"other\": {\n      \"command\": \"npx\""));
        assert!(plan.contents.contains("\"alpha\": {\"b\": 2, \"a\": 1}"));
        let zeta = plan.contents.find("zeta").expect("zeta");
        let alpha = plan.contents.find("alpha").expect("alpha");
        assert!(zeta < alpha, "{}", plan.contents);

        let backup = apply(&plan).expect("apply").expect("backup");
        assert_eq!(fs::read_to_string(backup).expect("bak"), original);
        let again = super::plan(&path, &entry()).expect("plan");
        assert_eq!(again.change, Change::Unchanged);
    }

    #[test]
    fn an_old_entry_is_updated_and_keeps_its_other_fields() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(
            &dir,
            r#"{"mcpServers": {"agentsecrets": {"env": {"A": "1"}, "command": "/old"}}}"#,
        );
        let plan = plan(&path, &entry()).expect("plan");
        assert_eq!(plan.change, Change::Updated);
        assert_eq!(plan.previous.as_deref(), Some(r#"{"env":{"A":"1"},"command":"/old"}"#));
        let value: Value = serde_json::from_str(&plan.contents).expect("json");
        let ours = &value["mcpServers"]["agentsecrets"];
        assert_eq!(ours["command"], "/usr/local/bin/agentsecrets");
        assert_eq!(ours["env"]["A"], "1");
    }

    #[test]
    fn a_home_variable_joins_the_users_env_and_a_changed_home_is_an_update() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(
            &dir,
            r#"{"mcpServers": {"agentsecrets": {"command": "/usr/local/bin/agentsecrets",
                "args": ["mcp", "serve"], "env": {"Z": "1", "A": "2"}}}}"#,
        );
        let first = plan(&path, &entry().with_env("AGENTSECRETS_HOME", "/h1")).expect("plan");
        assert_eq!(first.change, Change::Updated);
        // The file keeps the user's variables in their order, ours added last.
        assert!(first.contents.contains(r#""env": {"Z":"1","A":"2","AGENTSECRETS_HOME":"/h1"}"#));
        apply(&first).expect("apply");

        let same = plan(&path, &entry().with_env("AGENTSECRETS_HOME", "/h1")).expect("plan");
        assert_eq!(same.change, Change::Unchanged);
        let moved = plan(&path, &entry().with_env("AGENTSECRETS_HOME", "/h2")).expect("plan");
        assert_eq!(moved.change, Change::Updated);
    }

    #[test]
    fn bad_files_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        for text in ["{not json", "[1, 2]", r#"{"mcpServers": []}"#] {
            let path = write(&dir, text);
            assert!(plan(&path, &entry()).is_err(), "{text}");
        }
    }

    #[test]
    fn an_empty_file_counts_as_empty_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(&dir, "  \n");
        let plan = plan(&path, &entry()).expect("plan");
        assert_eq!(plan.change, Change::Added);
        assert!(plan.file_exists);
    }

    #[test]
    fn client_paths_follow_the_platform() {
        let env = |name: &str| match name {
            "HOME" => Some("/home/u".to_owned()),
            _ => None,
        };
        let cursor = Client::Cursor.config_path_in(&env).expect("path");
        assert_eq!(cursor, Path::new("/home/u/.cursor/mcp.json"));
        let claude = Client::Claude.config_path_in(&env).expect("path");
        assert!(claude.ends_with("Claude/claude_desktop_config.json"), "{}", claude.display());
        assert!(Client::Claude.config_path_in(&|_| None).is_err());
    }
}
