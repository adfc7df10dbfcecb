//! Self-registration: the agent asks each resolver to add its server to its
//! groups, so a new server needs no operator step. The resolver allows it only
//! with its join token (`[admin] join_token_file`); joining is idempotent, so
//! the agent joins at every start.

use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::JoinConfig;

/// First wait after a refused or failed join; doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Longest wait between join attempts.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// The join endpoint beside a push endpoint: `http://host/v1/push` becomes
/// `http://host/v1/join`.
pub fn join_url(push_url: &str) -> String {
    let base = push_url
        .strip_suffix(anycast_proto::push::PUSH_PATH)
        .unwrap_or(push_url.trim_end_matches('/'));
    format!("{base}/v1/join")
}

/// Joins through `push_url`'s resolver, retrying until it succeeds or
/// `shutdown`. A refusal (wrong token, unknown group) is logged and retried
/// too: the operator may fix the resolver meanwhile.
pub async fn join(
    client: reqwest::Client,
    push_url: String,
    server: String,
    groups: Vec<String>,
    config: JoinConfig,
    shutdown: CancellationToken,
) {
    let url = join_url(&push_url);
    let body = json!({ "server": server, "groups": groups, "probe": config.probe_url }).to_string();
    let mut wait = FIRST_RETRY;
    let mut warned = false;
    loop {
        let sent = client
            .post(&url)
            .bearer_auth(&config.token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        let outcome = match sent {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => {
                let status = r.status();
                Err(format!(
                    "{status}: {}",
                    r.text().await.unwrap_or_default().trim()
                ))
            }
            Err(e) => Err(anycast_daemon::tls::cause_chain(&e)),
        };
        match outcome {
            Ok(()) => {
                info!(%url, ?groups, "joined");
                return;
            }
            Err(error) => {
                if !warned {
                    warn!(%url, %error, "cannot join yet; retrying");
                    warned = true;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(MAX_RETRY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_join_url_sits_beside_the_push_url() {
        assert_eq!(
            join_url("http://127.0.0.1:8053/v1/push"),
            "http://127.0.0.1:8053/v1/join"
        );
        assert_eq!(
            join_url("http://r.example:80/"),
            "http://r.example:80/v1/join"
        );
    }
}
