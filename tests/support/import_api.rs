//! A Stitch Import API server for tests: a small HTTP/1.1 server on
//! loopback that checks every request the way the Import API documents them
//! (method, path, bearer token, content type, body shape, at most 1000
//! messages and 2 MiB, and per table a sequence that rises strictly across
//! accepted requests) and answers each request as the test scripts it: 202,
//! an error status, a dropped connection, or a hold until the test lets go.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

pub const TOKEN: &str = "test-token-123";
pub const MAX_BODY: usize = 2 * 1024 * 1024;

/// How the server answers one request.
#[derive(Clone)]
pub enum Answer {
    Accept,
    Status(u16, &'static str),
    /// Close the connection without answering.
    Drop,
    /// Wait until the test notifies, then accept.
    Hold(Arc<Notify>),
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub table: String,
    pub body_len: usize,
    /// Length of each message as serialized in the body.
    pub message_lens: Vec<usize>,
    pub sequences: Vec<u64>,
    /// The status sent back; None when the connection was dropped.
    pub status: Option<u16>,
}

/// One accepted message.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub table: String,
    pub sequence: u64,
    pub data: Value,
}

#[derive(Default)]
struct Log {
    seen: Vec<Seen>,
    accepted: Vec<Accepted>,
    /// Schema and key names of the last accepted request per table.
    schemas: BTreeMap<String, (Value, Value)>,
    last_sequence: BTreeMap<String, u64>,
    problems: Vec<String>,
}

struct Shared {
    log: Mutex<Log>,
    script: Mutex<VecDeque<Answer>>,
    /// Delay before every answer.
    delay: Mutex<Duration>,
    /// Whether sequences that do not rise are a problem (see `serve`).
    strict_sequences: bool,
}

pub struct ImportApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ImportApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ImportApi {
    /// A server that also holds the client to rising sequences.
    pub async fn start() -> ImportApi {
        Self::start_with(true).await
    }

    /// A server that takes what the Import API documents, sequences that
    /// repeat included (PlanetScale's singer-tap).
    pub async fn start_as_documented() -> ImportApi {
        Self::start_with(false).await
    }

    async fn start_with(strict_sequences: bool) -> ImportApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Shared {
            log: Mutex::new(Log::default()),
            script: Mutex::new(VecDeque::new()),
            delay: Mutex::new(Duration::ZERO),
            strict_sequences,
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let s = s.clone();
                tokio::spawn(async move { serve(sock, s).await });
            }
        });
        ImportApi { addr, shared, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn script(&self, answers: Vec<Answer>) {
        *self.shared.script.lock().expect("lock") = answers.into();
    }

    pub fn set_delay(&self, d: Duration) {
        *self.shared.delay.lock().expect("lock") = d;
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.shared.log.lock().expect("lock").seen.clone()
    }

    pub fn accepted(&self) -> Vec<Accepted> {
        self.shared.log.lock().expect("lock").accepted.clone()
    }

    pub fn schema_of(&self, table: &str) -> Option<(Value, Value)> {
        self.shared
            .log
            .lock()
            .expect("lock")
            .schemas
            .get(table)
            .cloned()
    }

    pub fn assert_no_problems(&self) {
        let log = self.shared.log.lock().expect("lock");
        assert!(
            log.problems.is_empty(),
            "the server found bad requests: {:?}",
            log.problems
        );
    }

    /// Accepted records of a table by `id`, each id at most once.
    pub fn by_id(&self, table: &str) -> BTreeMap<u64, Value> {
        let mut out = BTreeMap::new();
        for a in self.accepted().into_iter().filter(|a| a.table == table) {
            let id = a.data["id"].as_u64().expect("id");
            assert!(out.insert(id, a.data).is_none(), "id {id} accepted twice");
        }
        out
    }
}

/// Reads requests off one connection until it closes.
async fn serve(mut sock: TcpStream, s: Arc<Shared>) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // head
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 8192];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or("").to_string();
        let mut headers = BTreeMap::new();
        for l in lines.filter(|l| !l.is_empty()) {
            if let Some((k, v)) = l.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let mut chunk = vec![0u8; 64 * 1024];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf[head_end..head_end + len].to_vec();
        buf.drain(..head_end + len);

        let answer = s
            .script
            .lock()
            .expect("lock")
            .pop_front()
            .unwrap_or(Answer::Accept);
        let delay = *s.delay.lock().expect("lock");
        let checked = check(&request_line, &headers, &body);
        let (mut seen, messages, problem) = match checked {
            Ok((seen, messages)) => (seen, messages, None),
            Err(p) => (
                Seen {
                    table: String::new(),
                    body_len: body.len(),
                    message_lens: vec![],
                    sequences: vec![],
                    status: Some(400),
                },
                Value::Null,
                Some(p),
            ),
        };
        if let Some(p) = &problem {
            {
                let mut log = s.log.lock().expect("lock");
                log.problems.push(p.clone());
                log.seen.push(seen);
            }
            let _ = respond(&mut sock, 400, &format!("test server: {p}")).await;
            continue;
        }
        let status = match &answer {
            Answer::Accept | Answer::Hold(_) => 202,
            Answer::Status(code, _) => *code,
            Answer::Drop => 0,
        };
        seen.status = (status != 0).then_some(status);
        // Our tap's sequences rise within a request and past everything
        // accepted before (the order a target keeps). The API itself only
        // documents the sequence as the order of loading and takes equal
        // ones, as PlanetScale's singer-tap sends (milliseconds).
        if status == 202 && s.strict_sequences {
            let mut log = s.log.lock().expect("lock");
            if let Some(w) = seen.sequences.windows(2).find(|w| w[0] >= w[1]) {
                let p = format!("sequence {} does not rise within the request", w[1]);
                log.problems.push(p);
            }
            let last = log.last_sequence.get(&seen.table).copied().unwrap_or(0);
            let first = seen.sequences.first().copied().unwrap_or(0);
            if first <= last {
                let p = format!(
                    "table {}: sequence {first} does not rise past {last}, accepted before",
                    seen.table
                );
                log.problems.push(p);
            }
        }
        s.log.lock().expect("lock").seen.push(seen.clone());
        if let Answer::Hold(n) = &answer {
            n.notified().await;
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        match answer {
            Answer::Drop => return,
            Answer::Status(code, msg) => {
                let body = json!({"status": "error", "message": msg}).to_string();
                if respond(&mut sock, code, &body).await.is_err() {
                    return;
                }
            }
            Answer::Accept | Answer::Hold(_) => {
                {
                    let mut log = s.log.lock().expect("lock");
                    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    log.schemas.insert(
                        seen.table.clone(),
                        (body["schema"].clone(), body["key_names"].clone()),
                    );
                    if let Some(last) = seen.sequences.last() {
                        log.last_sequence.insert(seen.table.clone(), *last);
                    }
                    for m in messages.as_array().into_iter().flatten() {
                        log.accepted.push(Accepted {
                            table: seen.table.clone(),
                            sequence: m["sequence"].as_u64().unwrap_or(0),
                            data: m["data"].clone(),
                        });
                    }
                }
                let ok = json!({"status": "OK", "message": "Batch accepted"}).to_string();
                // a client that gave up on a held request has gone; the
                // batch still counts as accepted, as a real server's would
                if respond(&mut sock, 202, &ok).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn respond(sock: &mut TcpStream, code: u16, body: &str) -> std::io::Result<()> {
    let text = format!(
        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(text.as_bytes()).await?;
    sock.flush().await
}

/// Validates one request as the Import API would.
fn check(
    request_line: &str,
    headers: &BTreeMap<String, String>,
    body: &[u8],
) -> Result<(Seen, Value), String> {
    if request_line != "POST /v2/import/batch HTTP/1.1" {
        return Err(format!("request line `{request_line}`"));
    }
    if headers.get("authorization").map(String::as_str) != Some(&format!("Bearer {TOKEN}")) {
        return Err(format!(
            "authorization header {:?}",
            headers.get("authorization")
        ));
    }
    if headers.get("content-type").map(String::as_str) != Some("application/json") {
        return Err(format!("content-type {:?}", headers.get("content-type")));
    }
    if headers.get("content-length").is_none() {
        return Err("no content-length".into());
    }
    if body.len() > MAX_BODY {
        return Err(format!("body of {} bytes, over 2 MiB", body.len()));
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let obj = v.as_object().ok_or("body is not an object")?;
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort();
    if keys != ["key_names", "messages", "schema", "table_name"] {
        return Err(format!("body keys {keys:?}"));
    }
    let table = v["table_name"].as_str().ok_or("table_name")?.to_string();
    let props = v["schema"]["properties"]
        .as_object()
        .ok_or("schema has no properties")?;
    let key_names = v["key_names"].as_array().ok_or("key_names")?;
    for k in key_names {
        let k = k.as_str().ok_or("key name is not a string")?;
        if !props.contains_key(k) {
            return Err(format!("key {k} is not in the schema"));
        }
    }
    let messages = v["messages"].as_array().ok_or("messages")?;
    if messages.is_empty() || messages.len() > 1000 {
        return Err(format!("{} messages", messages.len()));
    }
    let mut sequences = Vec::new();
    for m in messages {
        let mo = m.as_object().ok_or("message is not an object")?;
        if mo.len() != 3 || m["action"] != "upsert" {
            return Err(format!("message shape {m}"));
        }
        let seq = m["sequence"].as_u64().ok_or("sequence")?;
        sequences.push(seq);
        let data = m["data"].as_object().ok_or("data is not an object")?;
        for k in data.keys() {
            if !props.contains_key(k) {
                return Err(format!("data key {k} is not in the schema"));
            }
        }
    }
    // each message's length as the client serialized it
    #[derive(serde::Deserialize)]
    struct Raw<'a> {
        #[serde(borrow)]
        messages: Vec<&'a serde_json::value::RawValue>,
    }
    let raw: Raw<'_> = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let message_lens = raw
        .messages
        .iter()
        .map(|m| m.get().len())
        .collect::<Vec<_>>();
    Ok((
        Seen {
            table,
            body_len: body.len(),
            message_lens,
            sequences,
            status: None,
        },
        Value::Array(messages.clone()),
    ))
}
