//! The configuration files: the resolver's and the agent's, from text.
//!
//! Input: the file's text, given to both parsers.
//!
//! Invariants: parsing never panics; an error points at a line and column
//! inside the text; a resolver config that validates yields a directory in
//! which every configured group is found by its own DNS name (a group the
//! DNS form cannot reach could never be answered nor pushed for).
//!
//! Configs name files (push keys, admin tokens) that are read while
//! validating: an input naming anything but a small regular file (a FIFO,
//! `/dev/zero`, `/proc/kmsg`) is skipped, so the fuzzer neither blocks nor
//! runs out of memory on the machine's own files.

#![no_main]

use std::path::Path;

use anycast_agent::config::AgentConfig;
use anycast_config_file::{ConfigError, Source};
use anycast_fuzz::env;
use anycast_proto::name;
use anycast_resolver::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if !names_only_small_files(text) {
        return;
    }
    let source = Source::new(text, Path::new("fuzz.toml"));

    match Config::from_source(&source, &env) {
        Ok(config) => check_resolver(&config),
        Err(error) => check_error(&error, text),
    }
    match AgentConfig::from_source(&source, &env) {
        Ok(config) => {
            assert!(!config.groups.is_empty() && !config.push_urls.is_empty());
            assert!(config.active.is_some() || config.passive.is_some());
            assert!(config.policy.heartbeat >= config.policy.min_interval);
        }
        Err(error) => check_error(&error, text),
    }
});

fn check_resolver(config: &Config) {
    assert!(!config.dns.listen.is_empty());
    assert!((512..=4096).contains(&config.dns.udp_payload));
    let directory = anycast_resolver::directory(config);
    for group in &config.groups {
        group.spec.validate().expect("a configured group is valid");
        let found = directory
            .group(&group.name)
            .expect("a configured group is in the directory");
        assert_eq!(found.name, group.name);
        let text = group.name.to_string();
        assert_eq!(
            name::parse(&text, directory.zones()).as_ref(),
            Ok(&group.name),
            "group {text} is not reachable by its DNS name"
        );
    }
}

fn check_error(error: &ConfigError, text: &str) {
    let message = error.to_string();
    assert!(message.starts_with("fuzz.toml:"), "{message}");
    if let ConfigError::Invalid { line, column, .. } = error {
        assert!(*line >= 1 && *column >= 1, "{message}");
        assert!(*line <= text.split('\n').count(), "{message}");
    }
}

/// Whether every string in the TOML names nothing the parsers could block or
/// exhaust memory on when they read it as a key or token file. Text that is
/// not TOML names nothing: the parsers refuse it before reading any file.
fn names_only_small_files(text: &str) -> bool {
    let Ok(table) = text.parse::<toml::Table>() else {
        return true;
    };
    let mut stack: Vec<&toml::Value> = table.values().collect();
    while let Some(value) = stack.pop() {
        match value {
            toml::Value::String(s) if !is_harmless_path(s) => return false,
            toml::Value::Array(items) => stack.extend(items),
            toml::Value::Table(t) => stack.extend(t.values()),
            _ => {}
        }
    }
    true
}

fn is_harmless_path(s: &str) -> bool {
    if s.is_empty() || s.contains('\0') {
        return true;
    }
    let path = Path::new(s);
    let Ok(meta) = std::fs::metadata(path) else {
        return true;
    };
    if meta.is_dir() {
        return true;
    }
    if !meta.is_file() || meta.len() > 64 * 1024 {
        return false;
    }
    // Files of /proc and /sys say they are empty and may be endless.
    match std::fs::canonicalize(path) {
        Ok(real) => !["/proc", "/sys", "/dev", "/run"]
            .iter()
            .any(|top| real.starts_with(top)),
        Err(_) => false,
    }
}
