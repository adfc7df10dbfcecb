//! The lab end to end: `anycast-lab run lab/scenarios/smoke.toml` with the
//! real resolver and agents (built by the lab itself through cargo, as
//! under `cargo run`), every policy for two seconds. The lab's numbers are
//! benchmarks, not assertions: this checks only that the run completes and
//! that every policy got answers and completed requests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The whole run takes about 25 s (plus building the daemons the first time).
const DEADLINE: Duration = Duration::from_secs(300);

fn lab() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_anycast-lab"));
    command.current_dir(workspace()).stdin(Stdio::null());
    command
}

fn workspace() -> PathBuf {
    let lab = Path::new(env!("CARGO_MANIFEST_DIR"));
    lab.parent().unwrap_or(lab).to_path_buf()
}

/// Runs `command`, stopping it (SIGTERM, so it kills its own children, then
/// SIGKILL) if it outlives `deadline`.
fn run_with_deadline(command: &mut Command, deadline: Duration) -> Output {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start anycast-lab");
    let pid = child.id().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(deadline) {
        Ok(output) => output.expect("cannot collect the lab's output"),
        Err(_) => {
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            std::thread::sleep(Duration::from_secs(5));
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            panic!("anycast-lab did not finish within {deadline:?}");
        }
    }
}

#[test]
fn every_policy_completes_requests_on_the_smoke_scenario() {
    let out = tempfile::tempdir().unwrap();
    let output = run_with_deadline(
        lab()
            .args(["run", "lab/scenarios/smoke.toml", "--out"])
            .arg(out.path()),
        DEADLINE,
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "anycast-lab failed ({}):\n{stdout}\n{stderr}",
        output.status
    );

    let summary = std::fs::read_to_string(out.path().join("summary.csv")).unwrap();
    let mut lines = summary.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let column = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (policy, requests, failed) = (column("policy"), column("requests"), column("failed"));
    let mut seen = Vec::new();
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        let n: usize = fields[requests].parse().unwrap();
        let f: usize = fields[failed].parse().unwrap();
        assert!(
            n > f,
            "policy {} completed no request ({n} started, {f} failed):\n{summary}\n{stderr}",
            fields[policy]
        );
        seen.push(fields[policy].to_owned());
    }
    assert_eq!(
        seen,
        [
            "random",
            "round-robin",
            "nearest",
            "push-only",
            "probe-only",
            "hybrid",
            "default",
            "oracle"
        ],
        "{summary}"
    );
    for file in [
        "results.csv",
        "shares.csv",
        "groups.jsonl",
        "response-time.svg",
    ] {
        let path = out.path().join(file);
        assert!(
            std::fs::metadata(&path).is_ok_and(|m| m.len() > 0),
            "{} is missing or empty",
            path.display()
        );
    }
    assert!(
        stdout.contains("policy") && stdout.contains("oracle"),
        "{stdout}"
    );
}

#[test]
fn a_bad_scenario_is_refused_with_its_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let smoke = std::fs::read_to_string(workspace().join("lab/scenarios/smoke.toml")).unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, smoke.replacen("capacity = 2", "capacity = 0", 1)).unwrap();
    let line = 1 + smoke
        .lines()
        .position(|l| l.starts_with("capacity = 2"))
        .unwrap();
    let output = run_with_deadline(
        lab().arg("check").arg(&bad).arg("--no-build"),
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    let expected = format!("bad.toml:{line}:12: field `capacity` in [[server]]: 0 workers");
    assert!(stderr.contains(&expected), "{expected} in:\n{stderr}");
}
