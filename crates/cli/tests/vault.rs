//! Issue 2 through the real binary: the encrypted vault, its files and their permissions,
//! dotenv import, tamper detection, concurrent writers, projects and the allowlist.
//!
//! Every test runs `agentsecrets` in a temporary `AGENTSECRETS_HOME` with the OS keychain
//! off (so the vault key goes to `vault.key`) and no passphrase in the environment, and
//! checks what a user relies on: exit codes, stdout and stderr, and the files left behind.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use assert_cmd::Command;
use assert_cmd::assert::Assert;
use base64::Engine as _;
use predicates::prelude::*;
use rusqlite::{Connection, OpenFlags};
use tempfile::TempDir;

/// The message of every invalid-key-name error.
const KEY_RULE: &str =
    "secret names are 1 to 128 of A-Z, a-z, 0-9 and _, and do not start with a digit";

/// A temporary home (not created until the binary creates it) and a working directory.
struct Home {
    _tmp: TempDir,
    home: PathBuf,
    work: PathBuf,
}

impl Home {
    fn new() -> Home {
        let tmp = tempfile::tempdir().expect("temporary directory");
        let home = tmp.path().join("home");
        let work = tmp.path().join("work");
        std::fs::create_dir(&work).expect("working directory");
        Home { _tmp: tmp, home, work }
    }

    /// A file inside the home.
    fn file(&self, name: &str) -> PathBuf {
        self.home.join(name)
    }

    /// The binary with this home, no keychain, no passphrase, run in the working directory.
    fn std_cmd(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("agentsecrets"));
        cmd.env("AGENTSECRETS_HOME", &self.home)
            .env("AGENTSECRETS_KEYCHAIN", "off")
            .env_remove("AGENTSECRETS_PASSPHRASE")
            .env_remove("AGENTSECRETS_AGENT_ID")
            .env_remove("AGENTSECRETS_TOKEN")
            .env_remove("AS_AGENT_TOKEN")
            .env_remove("AGENTSECRETS_ALLOW_LOCAL_HTTP")
            .env_remove("AGENTSECRETS_PORT")
            .env_remove("RUST_LOG")
            .current_dir(&self.work);
        cmd
    }

    /// [`Home::std_cmd`] as an `assert_cmd` command; stdin is closed unless written, and a
    /// command that hangs (say, on a prompt) fails the test instead of blocking it.
    fn cmd(&self) -> Command {
        let mut cmd = Command::from_std(self.std_cmd());
        cmd.timeout(Duration::from_secs(120));
        cmd
    }

    fn run(&self, args: &[&str]) -> Assert {
        self.cmd().args(args).assert()
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        stdout(&self.run(args).success())
    }

    /// Runs a command that must exit with `code`; returns its stderr.
    fn fails(&self, args: &[&str], code: i32) -> String {
        let assert = self.run(args).code(code);
        stderr(&assert)
    }

    /// `secrets get KEY`, with the one trailing newline the command adds removed.
    fn get(&self, key: &str) -> String {
        let out = self.ok(&["secrets", "get", key]);
        out.strip_suffix('\n').expect("get ends its output with a newline").to_owned()
    }

    /// The names printed by `secrets list`, after checking the header and the rule.
    fn listed(&self) -> Vec<String> {
        listed_names(&self.ok(&["secrets", "list"]))
    }

    /// The vault database, opened without creating it.
    fn db(&self) -> Connection {
        Connection::open_with_flags(self.file("vault.db"), OpenFlags::SQLITE_OPEN_READ_WRITE)
            .expect("vault.db opens")
    }

    /// Every stored secret as `project/name`, read from the database itself.
    fn stored(&self) -> Vec<String> {
        let db = self.db();
        let mut stmt = db
            .prepare(
                "SELECT p.name || '/' || s.name FROM secrets s \
                 JOIN projects p ON p.id = s.project_id ORDER BY p.name, s.name",
            )
            .unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().collect::<rusqlite::Result<_>>().unwrap()
    }
}

fn stdout(assert: &Assert) -> String {
    String::from_utf8(assert.get_output().stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(assert: &Assert) -> String {
    String::from_utf8(assert.get_output().stderr.clone()).expect("stderr is UTF-8")
}

/// Parses `secrets list` output: `Key`, a rule of `─`, then one name per line.
fn listed_names(out: &str) -> Vec<String> {
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("Key"), "header of {out:?}");
    let rule = lines.next().expect("a rule under the header");
    assert!(!rule.is_empty() && rule.chars().all(|c| c == '─'), "rule {rule:?}");
    lines
        .map(|line| {
            assert!(!line.contains(char::is_whitespace), "one bare name per line: {line:?}");
            line.to_owned()
        })
        .collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A value unique to this run, so that finding it anywhere means it leaked from here.
fn unique(label: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    format!("{label}-{}-{}", std::process::id(), nanos.as_nanos())
}

// ---------------------------------------------------------------------------------------
// secrets set / get / list / delete
// ---------------------------------------------------------------------------------------

#[test]
fn set_get_list_delete_round_trip() {
    let h = Home::new();

    // No prior `init`: the first command creates the home.
    h.run(&["secrets", "set", "ALPHA=alpha-value"])
        .success()
        .stdout(predicate::str::contains("Stored ALPHA in project 'default'"))
        .stdout(predicate::str::contains("alpha-value").not());
    assert_eq!(h.get("ALPHA"), "alpha-value");

    // Several at once, values with '=', spaces and non-ASCII kept exactly.
    h.ok(&["secrets", "set", "BRAVO=b=c==", "CHARLIE=with spaces ü €", "_under_1=x"]);
    assert_eq!(h.get("BRAVO"), "b=c==");
    assert_eq!(h.get("CHARLIE"), "with spaces ü €");
    assert_eq!(h.get("_under_1"), "x");

    let listing = h.ok(&["secrets", "list"]);
    assert_eq!(listed_names(&listing), ["ALPHA", "BRAVO", "CHARLIE", "_under_1"]);
    for value in ["alpha-value", "b=c==", "with spaces", "ü"] {
        assert!(!listing.contains(value), "list printed a value: {listing:?}");
    }

    // Overwrite.
    h.ok(&["secrets", "set", "ALPHA=replaced"]);
    assert_eq!(h.get("ALPHA"), "replaced");

    // Delete, then it is gone everywhere.
    h.run(&["secrets", "delete", "BRAVO"])
        .success()
        .stdout(predicate::str::contains("Deleted BRAVO"));
    let err = h.fails(&["secrets", "get", "BRAVO"], 1);
    assert!(err.contains("'BRAVO' not found"), "{err}");
    let err = h.fails(&["secrets", "delete", "BRAVO"], 1);
    assert!(err.contains("not found"), "{err}");
    assert_eq!(h.listed(), ["ALPHA", "CHARLIE", "_under_1"]);
    assert_eq!(h.stored(), ["default/ALPHA", "default/CHARLIE", "default/_under_1"]);

    // A missing key on get is a failure, not an empty value.
    h.run(&["secrets", "get", "NEVER_SET"]).code(1).stdout("");
}

#[test]
fn list_of_an_empty_project_prints_no_table() {
    let h = Home::new();
    h.run(&["secrets", "list"])
        .success()
        .stdout("")
        .stderr(predicate::str::contains("No secrets in project 'default'"));
}

#[test]
fn set_key_reads_the_value_from_piped_stdin() {
    let h = Home::new();

    h.cmd()
        .args(["secrets", "set", "FROM_STDIN"])
        .write_stdin("piped value 1\n")
        .assert()
        .success()
        .stdout(predicate::str::contains("Stored FROM_STDIN"))
        .stdout(predicate::str::contains("piped value").not());
    // One trailing newline (as `echo` adds) is not part of the value.
    assert_eq!(h.get("FROM_STDIN"), "piped value 1");

    // CRLF is trimmed the same way; inner line breaks are kept.
    h.cmd()
        .args(["secrets", "set", "MULTI"])
        .write_stdin("line one\nline two\r\n")
        .assert()
        .success();
    assert_eq!(h.get("MULTI"), "line one\nline two");

    // Without a trailing newline the value is taken exactly (printf '%s').
    h.cmd().args(["secrets", "set", "EXACT"]).write_stdin("  spaced  ").assert().success();
    assert_eq!(h.get("EXACT"), "  spaced  ");

    // A bare KEY beside KEY=value entries.
    h.cmd()
        .args(["secrets", "set", "INLINE=inline", "PIPED"])
        .write_stdin("piped")
        .assert()
        .success();
    assert_eq!(h.get("INLINE"), "inline");
    assert_eq!(h.get("PIPED"), "piped");

    // Two keys cannot share one stdin.
    let err = h.fails(&["secrets", "set", "ONE", "TWO"], 2);
    assert!(err.contains("only one KEY"), "{err}");
    assert_eq!(
        h.stored(),
        ["default/EXACT", "default/FROM_STDIN", "default/INLINE", "default/MULTI", "default/PIPED"]
    );
}

#[test]
fn invalid_key_names_are_usage_errors_that_store_nothing() {
    let h = Home::new();
    h.ok(&["secrets", "set", "KEEP=1"]);

    let too_long = "K".repeat(129);
    for bad in ["1ABC", "A-B", too_long.as_str(), "", "A B", "ÄBC"] {
        // Next to a valid entry: the whole command is refused.
        let err = h.fails(&["secrets", "set", "GOOD=1", &format!("{bad}=2")], 2);
        assert!(err.contains(KEY_RULE), "{bad:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");

        // The invalid one first, valid after it.
        let err = h.fails(&["secrets", "set", &format!("{bad}=2"), "GOOD=1"], 2);
        assert!(err.contains(KEY_RULE), "{bad:?}: {err}");

        // Read from stdin: refused before stdin matters.
        let assert = h.cmd().args(["secrets", "set", bad]).write_stdin("v").assert().code(2);
        assert!(stderr(&assert).contains(KEY_RULE), "{bad:?}");

        let err = h.fails(&["secrets", "get", bad], 2);
        assert!(err.contains(KEY_RULE), "{bad:?}: {err}");
        let err = h.fails(&["secrets", "delete", bad], 2);
        assert!(err.contains(KEY_RULE), "{bad:?}: {err}");
    }
    assert_eq!(h.stored(), ["default/KEEP"]);
    assert_eq!(h.listed(), ["KEEP"]);

    // The boundary: 128 characters is a valid name.
    let longest = "K".repeat(128);
    h.ok(&["secrets", "set", &format!("{longest}=ok")]);
    assert_eq!(h.get(&longest), "ok");
}

// ---------------------------------------------------------------------------------------
// secrets import
// ---------------------------------------------------------------------------------------

const DOTENV: &str = r#"# a comment line
   # an indented comment

export EXPORTED=exported-value
PLAIN = plain value   # an inline comment
HASHED=abc#def
SINGLE='single # kept $HOME \n'
DOUBLE="say \"hi\"\tthere # kept"
MULTI="first line
# not a comment inside quotes
last line"
EMPTY=
DUP=first
DUP=second
"#;

fn assert_dotenv_imported(h: &Home) {
    assert_eq!(h.get("EXPORTED"), "exported-value");
    assert_eq!(h.get("PLAIN"), "plain value");
    assert_eq!(h.get("HASHED"), "abc#def");
    assert_eq!(h.get("SINGLE"), r"single # kept $HOME \n");
    assert_eq!(h.get("DOUBLE"), "say \"hi\"\tthere # kept");
    assert_eq!(h.get("MULTI"), "first line\n# not a comment inside quotes\nlast line");
    assert_eq!(h.get("EMPTY"), "");
    assert_eq!(h.get("DUP"), "second", "a later duplicate wins");
    assert_eq!(
        h.listed(),
        ["DOUBLE", "DUP", "EMPTY", "EXPORTED", "HASHED", "MULTI", "PLAIN", "SINGLE"]
    );
}

#[test]
fn import_file_understands_dotenv_syntax() {
    let h = Home::new();
    let file = h.work.join(".env");
    std::fs::write(&file, DOTENV).unwrap();

    h.run(&["secrets", "import", file.to_str().unwrap()])
        .success()
        .stdout(predicate::str::contains("Imported 8 secrets into project 'default'"))
        .stdout(predicate::str::contains("exported-value").not());
    assert_dotenv_imported(&h);

    // A relative path is read from the current directory.
    std::fs::write(h.work.join("more.env"), "EXPORTED=changed\r\nNEW_ONE='n'\r\n").unwrap();
    h.ok(&["secrets", "import", "more.env"]);
    assert_eq!(h.get("EXPORTED"), "changed");
    assert_eq!(h.get("NEW_ONE"), "n");
}

#[test]
fn import_reads_stdin() {
    let h = Home::new();
    h.cmd()
        .args(["secrets", "import"])
        .write_stdin(DOTENV)
        .assert()
        .success()
        .stdout(predicate::str::contains("Imported 8 secrets"));
    assert_dotenv_imported(&h);

    // `-` names stdin too.
    h.cmd().args(["secrets", "import", "-"]).write_stdin("DUP=third\n").assert().success();
    assert_eq!(h.get("DUP"), "third");
}

#[test]
fn malformed_dotenv_exits_2_naming_the_line_and_stores_nothing() {
    let h = Home::new();
    h.ok(&["secrets", "set", "KEEP=kept"]);

    let cases = [
        // (file, line named, words of the message)
        ("GOOD=1\nOTHER=2\nBAD=\"sk_live_unterminated\nMORE=3\n", "line 3", "never closed"),
        ("GOOD=1\nsk_live_no_equals_here\nMORE=3\n", "line 2", "no '='"),
        ("GOOD=1\n\nSINGLE='sk_live_open\n", "line 3", "never closed"),
        ("GOOD=1\nQ=\"x\" sk_live_trailing\n", "line 2", "after closing quote"),
        ("GOOD=1\n# c\n1BAD=sk_live_bad_name\n", "line 3", KEY_RULE),
        ("GOOD=1\nA-B=sk_live_bad_name\n", "line 2", KEY_RULE),
    ];
    for (text, line, words) in cases {
        let file = h.work.join("bad.env");
        std::fs::write(&file, text).unwrap();
        let err = h.fails(&["secrets", "import", file.to_str().unwrap()], 2);
        assert!(err.contains(line), "{text:?}: {err}");
        assert!(err.contains(words), "{text:?}: {err}");
        assert!(!err.contains("sk_live"), "the message quotes the file: {err}");

        let assert = h.cmd().args(["secrets", "import"]).write_stdin(text).assert().code(2);
        assert!(stderr(&assert).contains(line), "{text:?} from stdin");
    }
    assert_eq!(h.stored(), ["default/KEEP"]);

    // A file with no assignment at all imports nothing, and says so.
    std::fs::write(h.work.join("empty.env"), "# only a comment\n\n").unwrap();
    let err = h.fails(&["secrets", "import", "empty.env"], 1);
    assert!(err.contains("nothing imported"), "{err}");

    // A file that does not exist is a failure naming it.
    let err = h.fails(&["secrets", "import", "missing.env"], 1);
    assert!(err.contains("missing.env"), "{err}");
    assert_eq!(h.stored(), ["default/KEEP"]);
}

// ---------------------------------------------------------------------------------------
// Tampering
// ---------------------------------------------------------------------------------------

#[test]
fn flipped_ciphertext_byte_fails_the_integrity_check() {
    let h = Home::new();
    h.ok(&["secrets", "set", "TARGET=target-value", "OTHER=other-value"]);

    {
        let db = h.db();
        let mut sealed: Vec<u8> = db
            .query_row("SELECT ciphertext FROM secrets WHERE name = 'TARGET'", [], |r| r.get(0))
            .unwrap();
        let middle = sealed.len() / 2;
        sealed[middle] ^= 0x01;
        let changed = db
            .execute("UPDATE secrets SET ciphertext = ?1 WHERE name = 'TARGET'", [&sealed])
            .unwrap();
        assert_eq!(changed, 1);
    }

    let assert = h.run(&["secrets", "get", "TARGET"]).code(1).stdout("");
    let err = stderr(&assert);
    assert!(err.contains("TARGET") && err.contains("integrity check"), "{err}");
    assert!(!err.contains("target-value"), "{err}");
    // The other value is unharmed, and listing still works.
    assert_eq!(h.get("OTHER"), "other-value");
    assert_eq!(h.listed(), ["OTHER", "TARGET"]);
}

#[test]
fn ciphertext_moved_to_another_row_does_not_open() {
    let h = Home::new();
    h.ok(&["secrets", "set", "SOURCE=source-value-A", "VICTIM=victim-value-B"]);

    // Copy A's nonce and ciphertext onto B's row.
    {
        let db = h.db();
        let changed = db
            .execute(
                "UPDATE secrets SET (nonce, ciphertext) = \
                 (SELECT nonce, ciphertext FROM secrets WHERE name = 'SOURCE') \
                 WHERE name = 'VICTIM'",
                [],
            )
            .unwrap();
        assert_eq!(changed, 1);
    }
    let assert = h.run(&["secrets", "get", "VICTIM"]).code(1);
    let (out, err) = (stdout(&assert), stderr(&assert));
    assert!(!out.contains("source-value-A") && !err.contains("source-value-A"), "{out}{err}");
    assert!(err.contains("integrity check"), "{err}");
    assert_eq!(h.get("SOURCE"), "source-value-A");

    // The same name in another project: the project is bound too.
    h.ok(&["project", "create", "other"]);
    let elsewhere = h.work.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    h.cmd().current_dir(&elsewhere).args(["project", "use", "other"]).assert().success();
    h.cmd()
        .current_dir(&elsewhere)
        .args(["secrets", "set", "SOURCE=other-project"])
        .assert()
        .success();
    {
        let db = h.db();
        let changed = db
            .execute(
                "UPDATE secrets SET (nonce, ciphertext) = \
                 (SELECT s.nonce, s.ciphertext FROM secrets s JOIN projects p \
                  ON p.id = s.project_id WHERE p.name = 'default' AND s.name = 'SOURCE') \
                 WHERE name = 'SOURCE' AND project_id = \
                 (SELECT id FROM projects WHERE name = 'other')",
                [],
            )
            .unwrap();
        assert_eq!(changed, 1);
    }
    let assert =
        h.cmd().current_dir(&elsewhere).args(["secrets", "get", "SOURCE"]).assert().code(1);
    assert!(!stdout(&assert).contains("source-value-A"));
    assert!(stderr(&assert).contains("integrity check"));
}

// ---------------------------------------------------------------------------------------
// The canary: no file under the home holds a value in plaintext
// ---------------------------------------------------------------------------------------

#[test]
fn canary_value_appears_in_no_file_under_the_home() {
    let h = Home::new();
    let canary = unique("sk_live_canary");

    h.cmd()
        .args(["secrets", "set", "CANARY_KEY"])
        .write_stdin(canary.clone())
        .assert()
        .success()
        .stdout(predicate::str::contains(&canary).not());
    // And through `KEY=value`, and import, under other names.
    h.ok(&["secrets", "set", &format!("CANARY_ARG={canary}")]);
    h.cmd()
        .args(["secrets", "import"])
        .write_stdin(format!("CANARY_ENV=\"{canary}\"\n"))
        .assert()
        .success();

    h.run(&["secrets", "list"]).success().stdout(predicate::str::contains(&canary).not());
    assert_eq!(h.get("CANARY_KEY"), canary);
    h.run(&["status"]).success().stdout(predicate::str::contains(&canary).not());
    h.run(&["init"]).success().stdout(predicate::str::contains(&canary).not());
    // A call that is refused (the domain is not allowlisted) still writes the audit log.
    let assert = h
        .run(&["call", "--url", "https://api.example.com/v1/charges", "--bearer", "CANARY_KEY"])
        .code(1);
    assert!(stderr(&assert).contains("allowlist"), "{}", stderr(&assert));
    assert!(!stdout(&assert).contains(&canary) && !stderr(&assert).contains(&canary));

    let encodings = [
        canary.clone().into_bytes(),
        base64::engine::general_purpose::STANDARD.encode(&canary).into_bytes(),
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(&canary).into_bytes(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&canary).into_bytes(),
        canary.bytes().map(|b| format!("{b:02x}")).collect::<String>().into_bytes(),
    ];
    let files = files_under(&h.home);
    let names: Vec<_> = files.iter().map(|f| f.file_name().unwrap().to_owned()).collect();
    for expected in ["vault.db", "audit.db", "vault.key"] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        for encoded in &encodings {
            assert!(
                !contains(&bytes, encoded),
                "{} holds the canary as {:?}",
                file.display(),
                String::from_utf8_lossy(encoded)
            );
        }
    }
    // The search does see the database's contents: the secret's name is stored in clear.
    assert!(contains(&std::fs::read(h.file("vault.db")).unwrap(), b"CANARY_KEY"));
}

// ---------------------------------------------------------------------------------------
// Permissions
// ---------------------------------------------------------------------------------------

#[test]
fn home_is_0700_and_its_files_0600() {
    let h = Home::new();
    h.ok(&["secrets", "set", "A=1"]);
    // `call` opens the audit log; refused, since nothing is allowlisted.
    h.run(&["call", "--url", "https://api.example.com/", "--bearer", "A"]).code(1);

    assert_eq!(mode(&h.home), 0o700);
    for name in ["vault.db", "audit.db", "vault.key"] {
        assert_eq!(mode(&h.file(name)), 0o600, "{name}");
    }
    for file in files_under(&h.home) {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
}

#[test]
fn home_open_to_others_is_refused_and_left_alone() {
    let h = Home::new();
    std::fs::create_dir(&h.home).unwrap();
    chmod(&h.home, 0o755);

    for args in [&["secrets", "set", "A=1"][..], &["secrets", "list"], &["init"], &["status"]] {
        let err = h.fails(args, 1);
        assert!(err.contains(&format!("chmod 700 {}", h.home.display())), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
    assert!(file_names(&h.home).is_empty(), "created {:?}", file_names(&h.home));
    assert_eq!(mode(&h.home), 0o755, "the mode was changed behind the user's back");

    // After the fix the user was told, it works.
    chmod(&h.home, 0o700);
    h.ok(&["secrets", "set", "A=1"]);
    assert_eq!(h.get("A"), "1");
}

#[test]
fn group_readable_home_is_refused_too() {
    let h = Home::new();
    std::fs::create_dir(&h.home).unwrap();
    chmod(&h.home, 0o750);
    let err = h.fails(&["secrets", "list"], 1);
    assert!(err.contains("chmod 700"), "{err}");
    assert!(file_names(&h.home).is_empty());
}

#[test]
fn home_that_is_a_file_is_refused() {
    let h = Home::new();
    std::fs::write(&h.home, "not a directory").unwrap();
    let err = h.fails(&["secrets", "set", "A=1"], 1);
    assert!(err.contains(&h.home.display().to_string()), "{err}");
    assert!(err.contains("not a directory"), "{err}");
    assert_eq!(std::fs::read(&h.home).unwrap(), b"not a directory");
}

#[test]
fn key_file_readable_by_others_is_refused() {
    let h = Home::new();
    h.ok(&["secrets", "set", "A=secret-a"]);
    let key_file = h.file("vault.key");
    let key = std::fs::read(&key_file).unwrap();
    chmod(&key_file, 0o644);

    let assert = h.run(&["secrets", "get", "A"]).code(1).stdout("");
    let err = stderr(&assert);
    assert!(err.contains(&key_file.display().to_string()), "{err}");
    assert!(err.contains("chmod 600"), "{err}");
    let err = h.fails(&["secrets", "set", "B=2"], 1);
    assert!(err.contains("vault.key"), "{err}");

    assert_eq!(std::fs::read(&key_file).unwrap(), key, "key file rewritten");
    assert_eq!(mode(&key_file), 0o644);
    chmod(&key_file, 0o600);
    assert_eq!(h.get("A"), "secret-a");
    assert_eq!(h.stored(), ["default/A"]);
}

#[test]
fn vault_db_readable_by_others_is_refused() {
    let h = Home::new();
    h.ok(&["secrets", "set", "A=1"]);
    chmod(&h.file("vault.db"), 0o644);
    let err = h.fails(&["secrets", "get", "A"], 1);
    assert!(err.contains("vault.db") && err.contains("chmod 600"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Corrupt, truncated and keyless vaults
// ---------------------------------------------------------------------------------------

/// Runs reading and writing commands against a broken vault.db: each exits 1 with a
/// message containing `words`, and the file's bytes stay as they were.
fn assert_refused_untouched(h: &Home, words: &str) {
    let db = h.file("vault.db");
    let before = std::fs::read(&db).unwrap();
    let key = std::fs::read(h.file("vault.key")).unwrap();
    let commands: [&[&str]; 6] = [
        &["secrets", "get", "A"],
        &["secrets", "list"],
        &["secrets", "set", "NEW=value"],
        &["secrets", "delete", "A"],
        &["init"],
        &["status"],
    ];
    for args in commands {
        let err = h.fails(args, 1);
        assert!(err.contains(words), "{args:?}: {err}");
        assert!(err.contains(&db.display().to_string()), "{args:?} names the file: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert_eq!(std::fs::read(&db).unwrap(), before, "{args:?} changed vault.db");
    }
    assert_eq!(std::fs::read(h.file("vault.key")).unwrap(), key, "vault.key changed");
    for leftover in ["vault.db-wal", "vault.db-journal"] {
        let path = h.file(leftover);
        assert!(
            !path.exists() || std::fs::metadata(&path).unwrap().len() == 0,
            "{leftover} written"
        );
    }
}

#[test]
fn corrupt_database_is_reported_and_left_untouched() {
    let h = Home::new();
    h.ok(&["secrets", "set", "A=1"]);
    let garbage: Vec<u8> =
        (0..8192u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(h.file("vault.db"), &garbage).unwrap();

    assert_refused_untouched(&h, "corrupt");
    assert_eq!(std::fs::read(h.file("vault.db")).unwrap(), garbage);
}

#[test]
fn truncated_database_is_reported_and_left_untouched() {
    let h = Home::new();
    h.ok(&["secrets", "set", "A=1", "B=2"]);
    for side in ["vault.db-wal", "vault.db-shm"] {
        let _ = std::fs::remove_file(h.file(side));
    }
    let whole = std::fs::read(h.file("vault.db")).unwrap();
    assert!(whole.len() > 4096, "a real database");
    std::fs::write(h.file("vault.db"), &whole[..100]).unwrap();

    assert_refused_untouched(&h, "corrupt");
    assert_eq!(std::fs::read(h.file("vault.db")).unwrap(), &whole[..100]);

    // Restoring the file restores the vault.
    std::fs::write(h.file("vault.db"), &whole).unwrap();
    assert_eq!(h.get("B"), "2");
}

#[test]
fn missing_key_file_is_an_error_and_never_replaced() {
    let h = Home::new();
    h.ok(&["secrets", "set", "A=value-a"]);
    let key_file = h.file("vault.key");
    let saved = h.work.join("vault.key.saved");
    std::fs::rename(&key_file, &saved).unwrap();

    let commands: [&[&str]; 5] = [
        &["secrets", "get", "A"],
        &["secrets", "set", "B=value-b"],
        &["secrets", "list"],
        &["init"],
        &["status"],
    ];
    for args in commands {
        let err = h.fails(args, 1);
        assert!(err.contains("key file") && err.contains("missing"), "{args:?}: {err}");
        assert!(err.contains(&key_file.display().to_string()), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(!key_file.exists(), "{args:?} made a new vault key");
    }

    std::fs::rename(&saved, &key_file).unwrap();
    assert_eq!(h.get("A"), "value-a");
    assert_eq!(h.stored(), ["default/A"], "B was stored while the key was missing");
}

#[test]
fn foreign_key_file_does_not_open_the_vault() {
    let h = Home::new();
    h.ok(&["secrets", "set", "A=value-a"]);
    let other = Home::new();
    other.ok(&["secrets", "set", "X=1"]);

    let key_file = h.file("vault.key");
    let own = std::fs::read(&key_file).unwrap();
    std::fs::write(&key_file, std::fs::read(other.file("vault.key")).unwrap()).unwrap();
    let assert = h.run(&["secrets", "get", "A"]).code(1).stdout("");
    assert!(stderr(&assert).contains("does not belong to this vault"), "{}", stderr(&assert));

    std::fs::write(&key_file, "not a key\n").unwrap();
    let err = h.fails(&["secrets", "get", "A"], 1);
    assert!(err.contains("vault.key") && err.contains("damaged"), "{err}");

    std::fs::write(&key_file, own).unwrap();
    assert_eq!(h.get("A"), "value-a");
}

// ---------------------------------------------------------------------------------------
// Passphrase mode
// ---------------------------------------------------------------------------------------

#[test]
fn passphrase_mode_wraps_the_key_and_refuses_a_wrong_or_missing_passphrase() {
    let h = Home::new();
    let with = |pass: &str| {
        let mut cmd = h.cmd();
        cmd.env("AGENTSECRETS_PASSPHRASE", pass);
        cmd
    };

    with("one").args(["secrets", "set", "A=value-a"]).assert().success();
    with("one").args(["secrets", "get", "A"]).assert().success().stdout("value-a\n");
    with("one")
        .arg("status")
        .assert()
        .success()
        .stdout(predicate::str::contains("AGENTSECRETS_PASSPHRASE"));

    let assert = with("two").args(["secrets", "get", "A"]).assert().code(1).stdout("");
    let err = stderr(&assert);
    assert!(err.contains("does not open"), "{err}");
    assert!(!err.contains("two"), "the passphrase is echoed: {err}");
    with("two").args(["secrets", "set", "B=value-b"]).assert().code(1);

    let err = h.fails(&["secrets", "get", "A"], 1);
    assert!(err.contains("AGENTSECRETS_PASSPHRASE"), "{err}");
    let err = h.fails(&["secrets", "set", "C=value-c"], 1);
    assert!(err.contains("AGENTSECRETS_PASSPHRASE"), "{err}");

    assert!(!h.file("vault.key").exists(), "passphrase mode wrote a key file");
    with("one").args(["secrets", "get", "A"]).assert().success().stdout("value-a\n");
    assert_eq!(h.stored(), ["default/A"]);
}

// ---------------------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------------------

/// Starts `secrets set K{i}=v{i}` in `n` processes at once and waits for all of them.
fn set_concurrently(h: &Home, n: usize) {
    let children: Vec<_> = (0..n)
        .map(|i| {
            h.std_cmd()
                .args(["secrets", "set", &format!("K{i}=v{i}")])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn agentsecrets")
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "writer {i} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn assert_all_concurrent_values(h: &Home, n: usize, also: &[&str]) {
    let mut expected: Vec<String> = (0..n).map(|i| format!("K{i}")).collect();
    expected.extend(also.iter().map(|s| (*s).to_owned()));
    expected.sort();
    assert_eq!(h.listed(), expected);
    for i in 0..n {
        assert_eq!(h.get(&format!("K{i}")), format!("v{i}"));
    }
}

#[test]
fn concurrent_writers_lose_nothing() {
    let h = Home::new();
    h.ok(&["secrets", "set", "SEED=0"]);
    set_concurrently(&h, 8);
    assert_all_concurrent_values(&h, 8, &["SEED"]);
    assert_eq!(h.get("SEED"), "0");
}

#[test]
fn concurrent_first_uses_agree_on_one_key() {
    let h = Home::new();
    set_concurrently(&h, 8);
    // Every value opens under the one key that is on disk now.
    assert_all_concurrent_values(&h, 8, &[]);
    assert_eq!(mode(&h.home), 0o700);
    assert_eq!(mode(&h.file("vault.key")), 0o600);
    let workspaces: i64 =
        h.db().query_row("SELECT count(*) FROM workspaces", [], |r| r.get(0)).unwrap();
    assert_eq!(workspaces, 1, "one workspace");
    let projects: i64 =
        h.db().query_row("SELECT count(*) FROM projects", [], |r| r.get(0)).unwrap();
    assert_eq!(projects, 1, "one default project");
}

#[test]
fn concurrent_first_uses_never_see_a_half_made_home() {
    // A home created open and chmod-ed after would be refused by a process that looked
    // in between; several rounds give a race of that kind its chances.
    for _ in 0..30 {
        let h = Home::new();
        let children: Vec<_> = (0..8)
            .map(|_| {
                h.std_cmd()
                    .args(["secrets", "list"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn agentsecrets")
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{}: {err}", out.status);
        }
        assert_eq!(mode(&h.home), 0o700);
    }
}

// ---------------------------------------------------------------------------------------
// init, status
// ---------------------------------------------------------------------------------------

fn workspace_id(init_out: &str) -> String {
    init_out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Workspace"))
        .map(|rest| rest.trim().to_owned())
        .unwrap_or_else(|| panic!("no Workspace line in {init_out:?}"))
}

#[test]
fn init_is_idempotent_and_never_prompts() {
    let h = Home::new();
    // stdin is closed and stdout a pipe: a prompt would hang until the timeout.
    let first = h.ok(&["init"]);
    assert!(first.contains(&h.home.display().to_string()), "{first}");
    assert!(first.contains("vault.db") && first.contains("vault.key"), "{first}");
    let id = workspace_id(&first);
    assert!(!id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()), "{id:?}");

    h.ok(&["secrets", "set", "A=1"]);
    let key = std::fs::read(h.file("vault.key")).unwrap();

    let second = h.ok(&["init", "--non-interactive"]);
    assert_eq!(workspace_id(&second), id);
    let third = h.cmd().arg("init").write_stdin("y\ny\n").assert().success();
    assert_eq!(workspace_id(&stdout(&third)), id);

    assert_eq!(std::fs::read(h.file("vault.key")).unwrap(), key, "init replaced the key");
    assert_eq!(h.get("A"), "1");

    let status = h.ok(&["status"]);
    assert!(status.contains(&id), "{status}");
    assert!(status.contains("default (1 secrets)"), "{status}");
}

// ---------------------------------------------------------------------------------------
// Projects
// ---------------------------------------------------------------------------------------

#[test]
fn projects_create_list_use_delete() {
    let h = Home::new();
    // Beside the working directory, not below it, so no link file applies there.
    let other_dir = h.work.parent().unwrap().join("other");
    std::fs::create_dir(&other_dir).unwrap();

    h.run(&["project", "create", "staging"])
        .success()
        .stdout(predicate::str::contains("Created project 'staging'"));
    let err = h.fails(&["project", "create", "staging"], 1);
    assert!(err.contains("already exists"), "{err}");
    h.fails(&["project", "create", "bad name!"], 2);

    let listing = h.ok(&["project", "list"]);
    assert!(listing.contains('│'), "{listing}");
    let rows: Vec<&str> = listing.lines().filter(|l| l.contains("staging")).collect();
    assert_eq!(rows.len(), 1, "{listing}");
    assert!(!rows[0].contains("current"), "{listing}");
    assert!(listing.lines().any(|l| l.contains("default") && l.contains("current")), "{listing}");

    // `use` links the current directory.
    h.run(&["project", "use", "staging"]).success();
    let link = h.work.join(".agentsecrets").join("project.json");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&link).expect("project.json written")).unwrap();
    assert_eq!(json["project"], "staging");

    // Commands there (and below) work on staging; elsewhere on default.
    h.ok(&["secrets", "set", "IN_STAGING=s"]);
    let sub = h.work.join("sub").join("deeper");
    std::fs::create_dir_all(&sub).unwrap();
    h.cmd()
        .current_dir(&sub)
        .args(["secrets", "get", "IN_STAGING"])
        .assert()
        .success()
        .stdout("s\n");
    h.cmd().current_dir(&other_dir).args(["secrets", "set", "IN_DEFAULT=d"]).assert().success();
    assert_eq!(h.stored(), ["default/IN_DEFAULT", "staging/IN_STAGING"]);
    assert_eq!(h.listed(), ["IN_STAGING"]);
    h.cmd().current_dir(&other_dir).args(["secrets", "get", "IN_STAGING"]).assert().code(1);
    let listing = h.ok(&["project", "list"]);
    assert!(listing.lines().any(|l| l.contains("staging") && l.contains("current")), "{listing}");

    // Using a project that does not exist changes nothing.
    let err = h.fails(&["project", "use", "nope"], 1);
    assert!(err.contains("'nope' does not exist"), "{err}");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&link).unwrap()).unwrap();
    assert_eq!(json["project"], "staging");

    // The default project stays.
    for args in
        [&["project", "delete", "default"][..], &["project", "delete", "default", "--force"]]
    {
        let err = h.fails(args, 1);
        assert!(err.contains("default project cannot be deleted"), "{args:?}: {err}");
    }
    assert_eq!(h.stored(), ["default/IN_DEFAULT", "staging/IN_STAGING"]);
    assert!(h.ok(&["project", "list"]).contains("default"));

    // A project with secrets needs --force; then its secrets go with it.
    let err = h.fails(&["project", "delete", "staging"], 1);
    assert!(err.contains("--force"), "{err}");
    assert_eq!(h.stored(), ["default/IN_DEFAULT", "staging/IN_STAGING"]);
    h.run(&["project", "delete", "staging", "--force"]).success();
    assert_eq!(h.stored(), ["default/IN_DEFAULT"]);
    let err = h.fails(&["project", "delete", "staging"], 1);
    assert!(err.contains("does not exist"), "{err}");
    let listing = h.cmd().current_dir(&other_dir).args(["project", "list"]).assert().success();
    assert!(!stdout(&listing).contains("staging"));

    // The directory still names the deleted project: commands there say so.
    let err = h.fails(&["secrets", "list"], 1);
    assert!(err.contains("'staging' does not exist"), "{err}");
}

// ---------------------------------------------------------------------------------------
// The allowlist
// ---------------------------------------------------------------------------------------

fn allowlisted(h: &Home) -> Vec<String> {
    let db = h.db();
    let mut stmt = db.prepare("SELECT domain FROM allowlist ORDER BY domain").unwrap();
    stmt.query_map([], |r| r.get(0)).unwrap().collect::<rusqlite::Result<_>>().unwrap()
}

#[test]
fn allowlist_add_remove_list_log() {
    let h = Home::new();

    h.run(&["workspace", "allowlist", "list"])
        .success()
        .stdout(predicate::str::contains("No domains allowed yet"));

    h.run(&["workspace", "allowlist", "add", "API.Example.COM.", "second.example.org"])
        .success()
        .stdout(predicate::str::contains("api.example.com  added"))
        .stdout(predicate::str::contains("second.example.org  added"));
    assert_eq!(allowlisted(&h), ["api.example.com", "second.example.org"]);
    h.run(&["workspace", "allowlist", "add", "api.example.com"])
        .success()
        .stdout(predicate::str::contains("already allowed"));

    // Not a bare host: a usage error, and nothing of that command is stored.
    for bad in ["https://x.com/path", "*.x.com", "x.com/path", "user@x.com"] {
        let err = h.fails(&["workspace", "allowlist", "add", "good.example.net", bad], 2);
        assert!(err.contains(bad), "{bad}: {err}");
        assert!(err.contains("host"), "{bad}: {err}");
    }
    assert_eq!(allowlisted(&h), ["api.example.com", "second.example.org"]);

    let listing = h.ok(&["workspace", "allowlist", "list"]);
    assert!(listing.contains('│'), "{listing}");
    assert!(listing.contains("Domain"), "{listing}");
    let rows: Vec<&str> = listing.lines().filter(|l| l.contains("example")).collect();
    assert_eq!(rows.len(), 2, "{listing}");
    assert!(rows[0].contains("api.example.com") && rows[0].contains('│'), "{listing}");

    let err = h.fails(&["workspace", "allowlist", "remove", "absent.example.com"], 1);
    assert!(err.contains("absent.example.com") && err.contains("not on the allowlist"), "{err}");
    h.fails(&["workspace", "allowlist", "remove", "https://x.com/path"], 2);

    // Removal normalises the same way.
    h.run(&["workspace", "allowlist", "remove", "API.EXAMPLE.com"])
        .success()
        .stdout(predicate::str::contains("api.example.com  removed"));
    assert_eq!(allowlisted(&h), ["second.example.org"]);

    let log = h.ok(&["workspace", "allowlist", "log"]);
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 3, "{log}");
    let timestamp = predicate::str::is_match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}").unwrap();
    for line in &lines {
        assert!(timestamp.eval(line), "no time in {line:?}");
    }
    assert!(lines[0].contains("add") && lines[0].contains("api.example.com"), "{log}");
    assert!(lines[1].contains("add") && lines[1].contains("second.example.org"), "{log}");
    assert!(lines[2].contains("remove") && lines[2].contains("api.example.com"), "{log}");
}
