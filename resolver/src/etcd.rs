//! A client of etcd's v3 API, through the JSON gateway every etcd serves on
//! its client port (`POST /v3/kv/range`, `/v3/kv/txn`, `/v3/watch`,
//! `/v3/auth/authenticate`).
//!
//! The gateway rather than gRPC: the resolver already has an HTTP client,
//! and the gRPC clients need `protoc` and a tonic stack at build time. The
//! JSON is protobuf's mapping: keys and values are base64, 64-bit numbers are
//! decimal strings, and fields at their zero value are left out (a failed
//! transaction has no `succeeded`, an absent key no `kvs`).
//!
//! Only what membership needs is here: a prefix read, a transaction of
//! compare-and-swaps over whole keys, and a watch of the prefix. Requests go
//! to the endpoint that answered last and move on to the next one on a
//! connection error, a timeout or a 5xx (etcd answers 503 while it has no
//! leader), so one member down costs one attempt.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use anycast_daemon::tls::{ClientTls, cause_chain as chain};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

/// How long one request to one endpoint may take. Past an election (etcd's
/// default election timeout is 1 s), a write is committed or refused.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// Where the store is and how to log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs (`http://host:port`), tried in turn.
    pub endpoints: Vec<String>,
    /// Every key this resolver reads or writes starts with it.
    pub prefix: String,
    /// etcd's role-based access: user and password, if the cluster has auth on.
    pub auth: Option<EtcdAuth>,
    /// For `https://` endpoints: the CA that signs etcd's certificate (else
    /// the system's roots) and this resolver's client certificate, if etcd
    /// asks for one (`--client-cert-auth`).
    pub tls: ClientTls,
}

/// A user of etcd's authentication.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdAuth {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for EtcdAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdAuth")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Why the store could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(String);

/// A key under the prefix (prefix taken off), its value and the revision
/// that last wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: i64,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The key was written.
    Put(Entry),
    /// The key was deleted at this revision.
    Delete { key: String, mod_revision: i64 },
}

impl Event {
    /// The revision of the change.
    pub fn revision(&self) -> i64 {
        match self {
            Event::Put(entry) => entry.mod_revision,
            Event::Delete { mod_revision, .. } => *mod_revision,
        }
    }
}

/// One write of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
}

impl Write {
    fn key(&self) -> &str {
        match self {
            Write::Put { key, .. } | Write::Delete { key } => key,
        }
    }
}

/// A key's expected state for a transaction to go through: written last at
/// this revision, or absent for 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    pub key: String,
    pub mod_revision: i64,
}

/// How a transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Written, at this revision.
    Written(i64),
    /// A key was not as expected: nothing was written.
    Conflict,
}

/// What a watch brings.
#[derive(Debug)]
pub enum Watched {
    /// Changes, in revision order, and the store's revision.
    Events(Vec<Event>),
    /// The revisions asked for were compacted away: read the prefix again.
    Compacted,
}

/// How long the member a watch streams from may take to answer a read
/// before the watch moves to another member.
pub const ALIVE_TIMEOUT: Duration = Duration::from_secs(1);

/// The client.
#[derive(Debug)]
pub struct Etcd {
    http: reqwest::Client,
    /// Watches stay open: no overall timeout on their client.
    streaming: reqwest::Client,
    config: EtcdConfig,
    /// The endpoint that answered last.
    preferred: AtomicUsize,
    /// The auth token, once logged in.
    token: Mutex<Option<String>>,
}

impl Etcd {
    pub fn new(config: EtcdConfig) -> Result<Etcd, StoreError> {
        let build = |timeout: Option<Duration>| {
            let mut builder = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(1))
                .tcp_keepalive(Duration::from_secs(5))
                .redirect(reqwest::redirect::Policy::none());
            if let Some(timeout) = timeout {
                builder = builder.timeout(timeout);
            }
            config
                .tls
                .apply(builder)
                .map_err(StoreError)?
                .build()
                .map_err(|e| StoreError(format!("cannot build the etcd client: {}", chain(&e))))
        };
        Ok(Etcd {
            http: build(Some(REQUEST_TIMEOUT))?,
            streaming: build(None)?,
            config,
            preferred: AtomicUsize::new(0),
            token: Mutex::new(None),
        })
    }

    /// How logs and errors name the store.
    pub fn describe(&self) -> String {
        format!("etcd at {}", self.config.endpoints.join(", "))
    }

    /// The whole prefix, and the store's revision it was read at.
    pub async fn read_prefix(&self) -> Result<(i64, Vec<Entry>), StoreError> {
        let (start, end) = self.prefix_range();
        let body = json!({ "key": BASE64.encode(start), "range_end": BASE64.encode(end) });
        let reply = self.call("/v3/kv/range", &body).await?;
        let revision = header_revision(&reply);
        let entries = reply
            .get("kvs")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|kv| self.entry(kv))
            .collect::<Result<_, _>>()?;
        Ok((revision, entries))
    }

    /// The keys' current entries (`None`: absent).
    async fn read_keys(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>, StoreError> {
        let mut found = Vec::with_capacity(keys.len());
        for key in keys {
            let body = json!({ "key": BASE64.encode(self.full_key(key)) });
            let reply = self.call("/v3/kv/range", &body).await?;
            let entry = reply
                .get("kvs")
                .and_then(Value::as_array)
                .and_then(|kvs| kvs.first())
                .map(|kv| self.entry(kv))
                .transpose()?;
            found.push(entry);
        }
        Ok(found)
    }

    /// Writes all of `writes` if every key is as `expect` says, else nothing.
    ///
    /// When an endpoint fails after the request went out, the transaction may
    /// have been committed all the same: it is sent again to the next
    /// endpoint, and if that one finds the keys changed, they are read to
    /// tell a commit of ours (every key holds what we wrote) from someone
    /// else's.
    pub async fn transact(
        &self,
        expect: &[Expect],
        writes: &[Write],
    ) -> Result<Outcome, StoreError> {
        let compare: Vec<Value> = expect
            .iter()
            .map(|e| {
                let key = BASE64.encode(self.full_key(&e.key));
                if e.mod_revision == 0 {
                    json!({ "key": key, "target": "VERSION", "result": "EQUAL", "version": "0" })
                } else {
                    json!({ "key": key, "target": "MOD", "result": "EQUAL",
                            "mod_revision": e.mod_revision.to_string() })
                }
            })
            .collect();
        let success: Vec<Value> = writes
            .iter()
            .map(|w| match w {
                Write::Put { key, value } => json!({ "request_put": {
                    "key": BASE64.encode(self.full_key(key)), "value": BASE64.encode(value) } }),
                Write::Delete { key } => json!({ "request_delete_range": {
                    "key": BASE64.encode(self.full_key(key)) } }),
            })
            .collect();
        let body = json!({ "compare": compare, "success": success });
        let (reply, resent) = self.call_counting("/v3/kv/txn", &body).await?;
        let revision = header_revision(&reply);
        if reply.get("succeeded").and_then(Value::as_bool) == Some(true) {
            return Ok(Outcome::Written(revision));
        }
        if resent {
            let keys: Vec<&str> = writes.iter().map(Write::key).collect();
            let now = self.read_keys(&keys).await?;
            let ours = writes.iter().zip(&now).all(|(w, now)| match (w, now) {
                (Write::Put { value, .. }, Some(entry)) => &entry.value == value,
                (Write::Delete { .. }, None) => true,
                _ => false,
            });
            if ours {
                let at = now.iter().flatten().map(|e| e.mod_revision).max();
                return Ok(Outcome::Written(at.unwrap_or(revision)));
            }
        }
        Ok(Outcome::Conflict)
    }

    /// Opens a watch of the prefix from `revision` on.
    pub async fn watch(&self, revision: i64) -> Result<Watch<'_>, StoreError> {
        let (start, end) = self.prefix_range();
        let body = json!({ "create_request": {
            "key": BASE64.encode(start), "range_end": BASE64.encode(end),
            "start_revision": revision.to_string() } });
        let response = self.send(&self.streaming, "/v3/watch", &body).await?.0;
        Ok(Watch {
            etcd: self,
            // `send` prefers the endpoint that answered last: this one.
            endpoint: self.preferred.load(Ordering::Relaxed),
            response,
            buffer: Vec::new(),
        })
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.config.prefix)
    }

    /// `[prefix, prefix + 1)`: every key that starts with the prefix.
    fn prefix_range(&self) -> (Vec<u8>, Vec<u8>) {
        let start = self.config.prefix.as_bytes().to_vec();
        let mut end = start.clone();
        while let Some(last) = end.pop() {
            if last < 0xff {
                end.push(last + 1);
                return (start, end);
            }
        }
        // An empty prefix (or all 0xff): to the end of the keyspace.
        (start, vec![0])
    }

    fn entry(&self, kv: &Value) -> Result<Entry, StoreError> {
        let key = decode(kv.get("key"))?;
        let key = String::from_utf8(key).map_err(|_| malformed("a key that is not UTF-8"))?;
        let key = key
            .strip_prefix(&self.config.prefix)
            .ok_or_else(|| malformed("a key outside the prefix"))?
            .to_owned();
        Ok(Entry {
            key,
            value: decode(kv.get("value"))?,
            mod_revision: number(kv.get("mod_revision")),
        })
    }

    /// The events of a watch's result.
    fn events(&self, result: &Value) -> Result<Vec<Event>, StoreError> {
        let events = result.get("events").and_then(Value::as_array);
        events
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|event| {
                let entry = self.entry(event.get("kv").unwrap_or(&Value::Null))?;
                Ok(match event.get("type").and_then(Value::as_str) {
                    Some("DELETE") => Event::Delete {
                        key: entry.key,
                        mod_revision: entry.mod_revision,
                    },
                    _ => Event::Put(entry),
                })
            })
            .collect()
    }

    async fn call(&self, path: &str, body: &Value) -> Result<Value, StoreError> {
        Ok(self.call_counting(path, body).await?.0)
    }

    /// Sends a request and reads its JSON answer; says whether it had to be
    /// sent more than once.
    async fn call_counting(&self, path: &str, body: &Value) -> Result<(Value, bool), StoreError> {
        let (response, resent) = self.send(&self.http, path, body).await?;
        Ok((json_body(response).await?, resent))
    }

    /// Posts `body` to each endpoint in turn, from the one that answered last,
    /// until one answers 2xx. A 4xx other than an expired login is final.
    async fn send(
        &self,
        client: &reqwest::Client,
        path: &str,
        body: &Value,
    ) -> Result<(reqwest::Response, bool), StoreError> {
        let endpoints = &self.config.endpoints;
        let first = self.preferred.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        let mut logged_in_again = false;
        let mut attempt = 0;
        while attempt < endpoints.len() {
            let index = (first + attempt) % endpoints.len();
            let endpoint = &endpoints[index];
            let mut request = client
                .post(format!("{}{path}", endpoint.trim_end_matches('/')))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
            if let Some(token) = self.token(client).await? {
                request = request.header(reqwest::header::AUTHORIZATION, token);
            }
            match request.send().await {
                Ok(response) if response.status().is_success() => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok((response, attempt > 0));
                }
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    let message = serde_json::from_str::<Value>(&text)
                        .ok()
                        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
                        .unwrap_or(text);
                    if status.is_server_error() {
                        failures.push(format!("{endpoint}: {status} {message}"));
                    } else if message.contains("invalid auth token") && !logged_in_again {
                        // The token expired: log in again, same endpoint.
                        logged_in_again = true;
                        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = None;
                        continue;
                    } else {
                        return Err(StoreError(format!(
                            "{} refused {path}: {status} {message}",
                            self.describe()
                        )));
                    }
                }
                Err(e) => failures.push(format!("{endpoint}: {}", chain(&e))),
            }
            attempt += 1;
        }
        Err(StoreError(format!(
            "cannot reach {}: {}",
            self.describe(),
            failures.join("; ")
        )))
    }

    /// The auth token, logging in first if there is none yet.
    async fn token(&self, client: &reqwest::Client) -> Result<Option<String>, StoreError> {
        let Some(auth) = &self.config.auth else {
            return Ok(None);
        };
        if let Some(token) = self.token.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Ok(Some(token));
        }
        let body = json!({ "name": auth.user, "password": auth.password });
        let mut failures = Vec::new();
        for endpoint in &self.config.endpoints {
            let url = format!("{}/v3/auth/authenticate", endpoint.trim_end_matches('/'));
            let reply = client.post(url).body(body.to_string()).send().await;
            match reply {
                Ok(r) if r.status().is_success() => {
                    let reply = json_body(r).await?;
                    let token = reply
                        .get("token")
                        .and_then(Value::as_str)
                        .ok_or_else(|| malformed("an authentication answer without a token"))?
                        .to_owned();
                    *self.token.lock().unwrap_or_else(|p| p.into_inner()) = Some(token.clone());
                    return Ok(Some(token));
                }
                Ok(r) if r.status().is_client_error() => {
                    return Err(StoreError(format!(
                        "{} refused the login of user {:?}: {}",
                        self.describe(),
                        auth.user,
                        r.text().await.unwrap_or_default()
                    )));
                }
                Ok(r) => failures.push(format!("{endpoint}: {}", r.status())),
                Err(e) => failures.push(format!("{endpoint}: {}", chain(&e))),
            }
        }
        Err(StoreError(format!(
            "cannot log in to {}: {}",
            self.describe(),
            failures.join("; ")
        )))
    }
}

/// An open watch.
#[derive(Debug)]
pub struct Watch<'a> {
    etcd: &'a Etcd,
    /// The index of the endpoint it streams from.
    endpoint: usize,
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl Watch<'_> {
    /// The next batch of changes: those of the next message, and of every
    /// message that has arrived already (a resolver that fell behind catches
    /// up in one step). An error when the stream ends or breaks (the member
    /// went away): open a new watch. Cancel-safe: it waits only before the
    /// first message, and a message is taken from the buffer only once whole.
    pub async fn next(&mut self) -> Result<Watched, StoreError> {
        let first = loop {
            if let Some(watched) = self.buffered()? {
                break watched;
            }
            self.read_chunk().await?;
        };
        let Watched::Events(mut events) = first else {
            return Ok(first);
        };
        loop {
            match self.buffered()? {
                Some(Watched::Events(more)) => events.extend(more),
                Some(Watched::Compacted) => {
                    return Err(StoreError(format!(
                        "{}: the watch was compacted",
                        self.etcd.describe()
                    )));
                }
                // A chunk that is there already, without waiting for one:
                // polled once, never awaited. The messages taken from the
                // buffer are only in `events` now, so there must be no await
                // point from here to the return: a caller's `select!` that
                // dropped this future there would lose them (it did, under
                // load: a change acknowledged and never applied here).
                None => {
                    let read = std::pin::pin!(self.read_chunk());
                    let mut context = Context::from_waker(Waker::noop());
                    match read.poll(&mut context) {
                        Poll::Ready(read) => read?,
                        Poll::Pending => return Ok(Watched::Events(events)),
                    }
                }
            }
        }
    }

    /// Whether the member this watch streams from still serves reads that
    /// go through the cluster's leader. A member that hangs (stopped, or cut
    /// off without a reset) leaves its watch open and silent; one cut off
    /// from its leader keeps it open and stale. Either way this fails within
    /// [`ALIVE_TIMEOUT`], and the caller watches elsewhere.
    pub async fn alive(&self) -> Result<(), StoreError> {
        let etcd = self.etcd;
        let endpoint = &etcd.config.endpoints[self.endpoint];
        let (start, end) = etcd.prefix_range();
        let body = json!({ "key": BASE64.encode(start), "range_end": BASE64.encode(end),
                           "count_only": true });
        let mut request = etcd
            .http
            .post(format!("{}/v3/kv/range", endpoint.trim_end_matches('/')))
            .timeout(ALIVE_TIMEOUT)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        if let Some(token) = etcd.token(&etcd.http).await? {
            request = request.header(reqwest::header::AUTHORIZATION, token);
        }
        let failure = match request.send().await {
            Ok(response) if response.status().is_success() => return Ok(()),
            Ok(response) => format!("answers {}", response.status()),
            Err(e) => format!("does not answer: {}", chain(&e)),
        };
        // The next request starts with the next endpoint, not this one.
        let next = (self.endpoint + 1) % etcd.config.endpoints.len();
        let _ = etcd.preferred.compare_exchange(
            self.endpoint,
            next,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        Err(StoreError(format!(
            "{endpoint}, which the watch reads from, {failure}"
        )))
    }

    /// The next whole message in the buffer, if any.
    fn buffered(&mut self) -> Result<Option<Watched>, StoreError> {
        while let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if let Some(watched) = self.parse(&line)? {
                return Ok(Some(watched));
            }
        }
        Ok(None)
    }

    async fn read_chunk(&mut self) -> Result<(), StoreError> {
        match self.response.chunk().await {
            Ok(Some(chunk)) => {
                self.buffer.extend_from_slice(&chunk);
                Ok(())
            }
            Ok(None) => Err(StoreError(format!(
                "{}: the watch ended",
                self.etcd.describe()
            ))),
            Err(e) => Err(StoreError(format!(
                "{}: the watch broke: {}",
                self.etcd.describe(),
                chain(&e)
            ))),
        }
    }

    fn parse(&self, line: &[u8]) -> Result<Option<Watched>, StoreError> {
        let line: Value = serde_json::from_slice(line).map_err(|e| malformed(&e.to_string()))?;
        if let Some(error) = line.get("error") {
            return Err(StoreError(format!(
                "{}: the watch failed: {error}",
                self.etcd.describe()
            )));
        }
        let result = line.get("result").unwrap_or(&Value::Null);
        if number(result.get("compact_revision")) > 0 {
            return Ok(Some(Watched::Compacted));
        }
        if result.get("canceled").and_then(Value::as_bool) == Some(true) {
            return Err(StoreError(format!(
                "{}: the watch was cancelled: {}",
                self.etcd.describe(),
                result.get("cancel_reason").unwrap_or(&Value::Null)
            )));
        }
        if result.get("events").is_none() {
            // The creation notice, or progress.
            return Ok(None);
        }
        Ok(Some(Watched::Events(self.etcd.events(result)?)))
    }
}

/// The JSON body of an answer (`reqwest` is built without its `json`
/// feature).
async fn json_body(response: reqwest::Response) -> Result<Value, StoreError> {
    let bytes = response
        .bytes()
        .await
        .map_err(|e| StoreError(format!("reading etcd's answer: {}", chain(&e))))?;
    serde_json::from_slice(&bytes).map_err(|e| malformed(&e.to_string()))
}

fn malformed(what: &str) -> StoreError {
    StoreError(format!("etcd answered with {what}"))
}

fn decode(field: Option<&Value>) -> Result<Vec<u8>, StoreError> {
    match field.and_then(Value::as_str) {
        None => Ok(Vec::new()),
        Some(text) => BASE64
            .decode(text)
            .map_err(|_| malformed("a field that is not base64")),
    }
}

/// A 64-bit field: a decimal string in protobuf's JSON, absent when zero.
fn number(field: Option<&Value>) -> i64 {
    match field {
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn header_revision(reply: &Value) -> i64 {
    number(reply.get("header").and_then(|h| h.get("revision")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn etcd(prefix: &str) -> Etcd {
        Etcd::new(EtcdConfig {
            endpoints: vec!["http://127.0.0.1:1".into()],
            prefix: prefix.into(),
            auth: None,
            tls: ClientTls::default(),
        })
        .unwrap()
    }

    /// A caller that drops `next()` when it is not ready at once (a
    /// `select!` with a timer) loses no message: the one read before the
    /// drop comes back, then the next. (A `next()` that drained a message
    /// and then awaited more lost it when dropped there.)
    #[tokio::test]
    async fn a_watch_dropped_while_it_waits_loses_no_message() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let line = |revision: i64, group: &str| {
            format!(
                r#"{{"result":{{"header":{{"revision":"{revision}"}},"events":[{{"kv":{{"key":"{}","mod_revision":"{revision}","value":"{}"}}}}]}}}}"#,
                BASE64.encode(format!("/p/groups/{group}")),
                BASE64.encode("null")
            ) + "\n"
        };
        let chunk = |text: &str| format!("{:x}\r\n{text}\r\n", text.len());
        let (first, second) = (chunk(&line(2, "a")), chunk(&line(3, "b")));
        let (send_second, second_due) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buffer = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buffer).await.unwrap();
                assert!(n > 0, "the client closed");
                head.extend_from_slice(&buffer[..n]);
            }
            // The head and the first message in one write: the first
            // message is there when `next()` is first polled.
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{first}"
            );
            socket.write_all(response.as_bytes()).await.unwrap();
            second_due.await.unwrap();
            socket.write_all(second.as_bytes()).await.unwrap();
            std::future::pending::<()>().await;
        });
        let etcd = Etcd::new(EtcdConfig {
            endpoints: vec![format!("http://{addr}")],
            prefix: "/p/".into(),
            auth: None,
            tls: ClientTls::default(),
        })
        .unwrap();
        let mut watch = etcd.watch(2).await.unwrap();
        let revisions_of = |watched: Watched| match watched {
            Watched::Events(events) => events.iter().map(Event::revision).collect::<Vec<_>>(),
            Watched::Compacted => panic!("compacted"),
        };
        let mut revisions = Vec::new();
        // Polled once, then dropped if not ready, as `select!` does.
        tokio::select! {
            biased;
            watched = watch.next() => revisions.extend(revisions_of(watched.unwrap())),
            () = std::future::ready(()) => {}
        }
        send_second.send(()).unwrap();
        while revisions.len() < 2 {
            let watched = tokio::time::timeout(Duration::from_secs(10), watch.next())
                .await
                .expect("the watch brings the messages")
                .unwrap();
            revisions.extend(revisions_of(watched));
        }
        server.abort();
        assert_eq!(revisions, [2, 3]);
    }

    #[test]
    fn the_prefix_range_covers_exactly_the_prefix() {
        assert_eq!(
            etcd("/anycast/").prefix_range(),
            (b"/anycast/".to_vec(), b"/anycast0".to_vec())
        );
        assert_eq!(etcd("a\u{7f}").prefix_range().1, b"a\x80".to_vec());
        assert_eq!(etcd("").prefix_range(), (Vec::new(), vec![0]));
    }

    #[test]
    fn watch_lines_become_events() {
        let etcd = etcd("/p/");
        let watch_line = |line: &str| {
            let value: Value = serde_json::from_str(line).unwrap();
            etcd.events(&value["result"]).unwrap()
        };
        let put = format!(
            r#"{{"result":{{"header":{{"revision":"7"}},"events":[{{"kv":{{"key":"{}","mod_revision":"7","value":"{}"}}}},{{"type":"DELETE","kv":{{"key":"{}","mod_revision":"8"}}}}]}}}}"#,
            BASE64.encode("/p/groups/a"),
            BASE64.encode("null"),
            BASE64.encode("/p/groups/b")
        );
        assert_eq!(
            watch_line(&put),
            [
                Event::Put(Entry {
                    key: "groups/a".into(),
                    value: b"null".to_vec(),
                    mod_revision: 7
                }),
                Event::Delete {
                    key: "groups/b".into(),
                    mod_revision: 8
                }
            ]
        );
    }

    #[test]
    fn passwords_stay_out_of_logs() {
        let auth = EtcdAuth {
            user: "anycast".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{auth:?}").contains("hunter2"));
    }
}
