//! The lab end to end, with the real resolver and agents (built by the lab
//! itself through cargo, as under `cargo run`): the whole suite with every
//! policy for two seconds, and the smoke scenario with several resolvers.
//! The lab's numbers are benchmarks, not assertions: this checks only that
//! the runs complete and that every policy got answers and completed
//! requests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The suite's run takes about four minutes (plus building the daemons the
/// first time); the deadline only stops a lab that hangs.
const DEADLINE: Duration = Duration::from_secs(900);

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

/// Checks that every row of a summary CSV (`summary.csv` or `suite.csv`)
/// completed requests, and returns the rows' `key` column values.
fn every_row_completed_requests(csv: &str, key: &str, context: &str) -> Vec<String> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let column = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (key, requests, failed) = (column(key), column("requests"), column("failed"));
    lines
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            let n: usize = fields[requests].parse().unwrap();
            let f: usize = fields[failed].parse().unwrap();
            assert!(
                n > f,
                "{line}: completed no request ({n} started, {f} failed):\n{csv}\n{context}"
            );
            fields[key].to_owned()
        })
        .collect()
}

fn assert_files(dir: &Path, files: &[&str]) {
    for file in files {
        let path = dir.join(file);
        assert!(
            std::fs::metadata(&path).is_ok_and(|m| m.len() > 0),
            "{} is missing or empty",
            path.display()
        );
    }
}

/// `anycast-lab suite` over the repository's scenarios, each policy for two
/// seconds (every schedule scaled along): every scenario runs every policy
/// to completed requests, and the suite's table, CSV and chart are written.
#[test]
fn the_suite_runs_every_scenario_and_policy() {
    let out = tempfile::tempdir().unwrap();
    let output = run_with_deadline(
        lab()
            .args([
                "suite",
                "lab/scenarios/suite",
                "--duration",
                "2s",
                "--settle",
                "500ms",
                "--out",
            ])
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
    let csv = std::fs::read_to_string(out.path().join("suite.csv")).unwrap();
    let policies: Vec<String> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap().to_owned())
        .collect();
    let scenarios = every_row_completed_requests(&csv, "scenario", &stderr);
    let files = std::fs::read_dir(workspace().join("lab/scenarios/suite"))
        .unwrap()
        .count();
    let mut distinct = scenarios.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), files, "{csv}");
    for policy in [
        "random",
        "round-robin",
        "nearest",
        "least-request",
        "p2c-peak-ewma",
        "prequal",
        "hybrid",
        "default",
        "oracle",
    ] {
        assert_eq!(
            policies.iter().filter(|p| *p == policy).count(),
            files,
            "{policy} in every scenario:\n{csv}"
        );
    }
    assert_files(out.path(), &["suite.txt", "suite.svg"]);
    assert_files(
        &out.path().join("paper"),
        &[
            "results.csv",
            "shares.csv",
            "groups.jsonl",
            "response-time.svg",
        ],
    );
    assert!(
        stdout.contains("mean/o") && stdout.contains("oracle"),
        "{stdout}"
    );
}

/// Two local resolvers under one authority share the clients (and, with
/// authoritative ones, each gets the pushes): both arrangements answer.
#[test]
fn several_resolvers_share_the_clients() {
    for role in ["local", "authoritative"] {
        let out = tempfile::tempdir().unwrap();
        let output = run_with_deadline(
            lab()
                .args([
                    "run",
                    "lab/scenarios/smoke.toml",
                    "--policies",
                    "default,oracle",
                    "--resolvers",
                    "2",
                    "--resolver-role",
                    role,
                    "--out",
                ])
                .arg(out.path()),
            DEADLINE,
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{role}: {stderr}");
        let summary = std::fs::read_to_string(out.path().join("summary.csv")).unwrap();
        let seen = every_row_completed_requests(&summary, "policy", &stderr);
        assert_eq!(seen, ["default", "oracle"], "{summary}");
        let logs = out.path().join("logs");
        let resolvers: &[&str] = match role {
            "local" => &["authority.log", "local-1.log", "local-2.log"],
            _ => &["resolver-1.log", "resolver-2.log"],
        };
        assert_files(&logs, resolvers);
        assert!(stderr.contains(&format!("2 {role} resolvers")), "{stderr}");
    }
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
