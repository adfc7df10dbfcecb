//! Configuration fixtures: the heads of resolver configs the tests build on,
//! and the example configs of `configs/`.

use std::path::{Path, PathBuf};

use crate::process::{AGENT, RESOLVER, workspace_root};

// ---------------------------------------------------------------------------
// Example configs
// ---------------------------------------------------------------------------

/// Every `configs/*.toml` of the workspace with its text, sorted by path.
pub fn example_configs() -> Vec<(PathBuf, String)> {
    let dir = workspace_root().join("configs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("cannot read configs/").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|file| {
            let text = std::fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
            (file, text)
        })
        .collect()
}

/// The program an example config is for: the first of `anycast-resolver` and
/// `anycast-agent` that its header comment names (each example's header
/// shows the command that uses it).
pub fn program_of(config_text: &str) -> Option<&'static str> {
    let header: String = config_text
        .lines()
        .take_while(|line| line.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    [RESOLVER, AGENT]
        .into_iter()
        .filter_map(|program| header.find(program).map(|at| (at, program)))
        .min()
        .map(|(_, program)| program)
}

/// The variables named by `env = "NAME"` lines (push keys read from the
/// environment).
pub fn env_secrets(config_text: &str) -> Vec<String> {
    config_text
        .lines()
        .filter_map(|line| {
            let (key, value) = line.split('#').next()?.split_once('=')?;
            (key.trim() == "env").then(|| value.trim().trim_matches('"').to_owned())
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Resolver configs
// ---------------------------------------------------------------------------

/// `[forward] upstreams` for tests that never forward: the discard port,
/// which answers no DNS.
pub const NO_UPSTREAM: &str = "127.0.0.1:9";

/// The start of a resolver config: `[dns]` (plus the `dns_extra` lines) and
/// `[http]` on free loopback ports, then `[forward]` to `upstream`. More
/// `[forward]` settings may follow it, then the rest of the config.
pub fn resolver_head(upstream: impl std::fmt::Display, dns_extra: &str) -> String {
    resolver_head_with(upstream, dns_extra, "")
}

/// [`resolver_head`] with the `http_extra` lines in `[http]` too (its TLS
/// certificate, say).
pub fn resolver_head_with(
    upstream: impl std::fmt::Display,
    dns_extra: &str,
    http_extra: &str,
) -> String {
    format!(
        r#"[dns]
listen = ["127.0.0.1:0"]
{dns_extra}
[http]
listen = "127.0.0.1:0"
{http_extra}
[forward]
upstreams = ["{upstream}"]
"#
    )
}

/// An `[admin]` section on a free loopback port with the token and state
/// file at the given paths (more `[admin]` settings may follow it).
pub fn admin_toml(token_file: &Path, state_file: &Path) -> String {
    format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\nstate_file = \"{}\"\n",
        token_file.display(),
        state_file.display()
    )
}
