//! `agentsecrets env -- COMMAND`: secrets in the child's environment, nothing on stdout
//! of ours, the child's exit code and signals its own, and one audit entry first.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::{TestHome, describe};

const VALUE: &str = "env-canary-0001";

fn home() -> TestHome {
    let home = TestHome::new();
    home.set_secrets(&[("STRIPE_KEY", VALUE), ("OTHER_KEY", "other-0002")]);
    home
}

#[test]
fn the_child_sees_the_secrets_and_the_parent_environment() {
    let home = home();
    let out = home.run_env(
        &["env", "--", "sh", "-c", "echo \"$STRIPE_KEY|$OTHER_KEY|$KEEP_ME\""],
        &[("KEEP_ME", "kept")],
    );

    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{VALUE}|other-0002|kept\n"));
    assert!(out.stderr.is_empty(), "env prints nothing of its own: {}", describe(&out));
}

#[test]
fn only_limits_the_injected_keys() {
    let home = home();
    let out = home.run(&["env", "--only", "OTHER_KEY", "--", "sh", "-c", "echo \"[$STRIPE_KEY]\""]);

    assert_eq!(String::from_utf8_lossy(&out.stdout), "[]\n");
    let entry = home.audit().pop().expect("an entry");
    assert_eq!(entry["secret_keys"], serde_json::json!(["OTHER_KEY"]));
}

#[test]
fn exit_codes_are_the_childs_and_stdin_is_inherited() {
    let home = home();
    let status = home.run(&["env", "--", "sh", "-c", "exit 42"]).status;
    assert_eq!(status.code(), Some(42));

    let mut child = home
        .command(&["env", "--", "sh", "-c", "read line; echo \"got $line\""])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn env");
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got hello\n");
}

#[test]
fn sigterm_reaches_the_program_itself() {
    let home = home();
    let mut child = home
        .command(&[
            "env",
            "--",
            "sh",
            "-c",
            "trap 'echo terminated; exit 7' TERM; echo ready; while :; do sleep 0.05; done",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn env");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");

    // env execs the program, so the pid we started is the program's own.
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the program did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "terminated\n");
    assert_eq!(status.code(), Some(7));
}

#[test]
fn one_audit_entry_names_the_command_and_keys_never_arguments() {
    let home = home();
    home.run(&["env", "--agent-id", "runner", "--", "sh", "-c", "true", "secret-looking-arg"]);

    let entries = home.audit();
    assert_eq!(entries.len(), 1);
    let entry = &entries[0];
    assert_eq!(entry["transport"], "env");
    assert_eq!(entry["method"], "ENV");
    assert_eq!(entry["target_url"], "sh");
    assert_eq!(entry["agent_id"], "runner");
    assert_eq!(entry["identity_level"], "declared");
    assert_eq!(entry["secret_keys"], serde_json::json!(["OTHER_KEY", "STRIPE_KEY"]));
    assert!(!entry.to_string().contains("secret-looking-arg"));
    assert!(!entry.to_string().contains(VALUE));
}

#[test]
fn bad_invocations_fail_with_a_message_and_no_entry() {
    let home = home();

    let missing = home.run(&["env", "--", "no-such-command-xyz"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("command not found"));

    let no_command = home.run(&["env"]);
    assert_eq!(no_command.status.code(), Some(2));
    let no_dashes = home.run(&["env", "sh"]);
    assert_eq!(no_dashes.status.code(), Some(2), "the command must follow --");

    let not_a_variable = home.run(&["env", "--only", "BAD-NAME", "--", "true"]);
    assert_eq!(not_a_variable.status.code(), Some(2), "{}", describe(&not_a_variable));
    let said = String::from_utf8_lossy(&not_a_variable.stderr);
    assert!(said.contains("'BAD-NAME'") && said.contains("environment variable name"), "{said}");

    let unknown_key = home.run(&["env", "--only", "NOPE", "--", "true"]);
    assert_eq!(unknown_key.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown_key.stderr).contains("secret 'NOPE' not found"));
    let entries = home.audit();
    assert_eq!(entries.len(), 1, "only the refused run is logged: {entries:?}");
    assert_eq!(entries[0]["reason"], "secret_not_found");
}
