//! Packing records into Import API request bodies.
//!
//! A body is `{"table_name":…,"schema":…,"messages":[m1,…,mn],"key_names":[…]}`.
//! Everything but the messages is fixed per stream (its [`Envelope`]), so a
//! body's size is `prefix + Σ|mᵢ| + (n − 1) + suffix`. Each message is
//! serialized once, when its record arrives, and appended to the pending
//! body bytes; whether the next one still fits is a sum, not a trial
//! serialization. (The Go tap serialized the whole batch, halved it while
//! it was too big, and serialized again.)

use hyper::body::Bytes;
use serde_json::value::RawValue;

/// Most messages the Import API takes in one request.
pub const MAX_MESSAGES: usize = 1000;
/// Largest request body the Import API takes.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// The limits of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub messages: usize,
    pub bytes: usize,
}

impl Limits {
    /// The Go tap buffered `batch_size` records and then sent them in
    /// requests of at most 1000, so the requests it made held
    /// `min(batch_size, 1000)` records. Sending as soon as a request is full
    /// gives the same requests without holding 9000 records in memory.
    pub fn for_batch_size(batch_size: usize) -> Limits {
        Limits {
            messages: batch_size.clamp(1, MAX_MESSAGES),
            bytes: MAX_BODY_BYTES,
        }
    }
}

/// The fixed parts of one stream's request bodies.
#[derive(Debug, PartialEq, Eq)]
pub struct Envelope {
    /// `{"table_name":"t","schema":{…},"messages":[`
    prefix: Vec<u8>,
    /// `],"key_names":["id"]}`
    suffix: Vec<u8>,
}

impl Envelope {
    /// The schema is copied verbatim, as the SCHEMA message carried it.
    pub fn new(table_name: &str, schema: &RawValue, key_names: &[String]) -> Envelope {
        let mut prefix = b"{\"table_name\":".to_vec();
        // Serializing a str or a list of strings cannot fail.
        let _ = serde_json::to_writer(&mut prefix, table_name);
        prefix.extend_from_slice(b",\"schema\":");
        prefix.extend_from_slice(schema.get().as_bytes());
        prefix.extend_from_slice(b",\"messages\":[");
        let mut suffix = b"],\"key_names\":".to_vec();
        let _ = serde_json::to_writer(&mut suffix, key_names);
        suffix.push(b'}');
        Envelope { prefix, suffix }
    }

    /// Bytes of a body with no messages.
    pub fn overhead(&self) -> usize {
        self.prefix.len() + self.suffix.len()
    }
}

/// Appends one message, `{"action":"upsert","sequence":N,"data":{…}}`, with
/// the record's data copied verbatim.
pub fn encode_message(buf: &mut Vec<u8>, sequence: u64, data: &RawValue) {
    use std::io::Write;
    buf.extend_from_slice(b"{\"action\":\"upsert\",\"sequence\":");
    let _ = write!(buf, "{sequence}");
    buf.extend_from_slice(b",\"data\":");
    buf.extend_from_slice(data.get().as_bytes());
    buf.push(b'}');
}

/// Where a new message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Into the pending body.
    Here,
    /// The pending body must be sent first; the message starts the next.
    AfterSend,
    /// Even a body holding only this message would be over the limit.
    TooLarge { body_bytes: usize },
}

/// The records of one stream waiting to be sent, as body bytes.
#[derive(Debug)]
pub struct Pending {
    limits: Limits,
    /// The messages so far, comma-separated.
    joined: Vec<u8>,
    count: usize,
}

impl Pending {
    pub fn new(limits: Limits) -> Pending {
        Pending {
            limits,
            joined: Vec::new(),
            count: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The exact size of the body these messages make.
    pub fn body_len(&self, envelope: &Envelope) -> usize {
        envelope.overhead() + self.joined.len()
    }

    /// Decides where a message of `len` bytes goes.
    pub fn place(&self, envelope: &Envelope, len: usize) -> Place {
        let alone = envelope.overhead() + len;
        if alone > self.limits.bytes {
            return Place::TooLarge { body_bytes: alone };
        }
        if self.count == 0 {
            return Place::Here;
        }
        if self.count >= self.limits.messages
            || self.body_len(envelope) + 1 + len > self.limits.bytes
        {
            Place::AfterSend
        } else {
            Place::Here
        }
    }

    /// Appends a message that [`Pending::place`] put [`Place::Here`].
    pub fn push(&mut self, message: &[u8]) {
        if self.count > 0 {
            self.joined.push(b',');
        }
        self.joined.extend_from_slice(message);
        self.count += 1;
    }

    /// Whether the next message must go to a new body whatever its size.
    pub fn is_full(&self) -> bool {
        self.count >= self.limits.messages
    }

    /// The finished body; the pending list starts over.
    pub fn take_body(&mut self, envelope: &Envelope) -> Bytes {
        let mut body = Vec::with_capacity(self.body_len(envelope));
        body.extend_from_slice(&envelope.prefix);
        body.extend_from_slice(&self.joined);
        body.extend_from_slice(&envelope.suffix);
        self.joined.clear();
        self.count = 0;
        Bytes::from(body)
    }
}

/// The `sequence` of each record: strictly rising through the run, even for
/// records of the same microsecond, and close to the clock (epoch
/// microseconds) so that it keeps rising across runs and stays above the Go
/// tap's epoch-millisecond values. Epoch microseconds stay below 2^53 until
/// the year 2255, so consumers that read JSON numbers as doubles keep them
/// exact.
#[derive(Debug, Default)]
pub struct Sequence {
    last: u64,
}

impl Sequence {
    /// The next value, given the clock in epoch microseconds.
    pub fn next(&mut self, now_micros: u64) -> u64 {
        self.last = now_micros.max(self.last.saturating_add(1));
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_string()).expect("valid json")
    }

    fn envelope() -> Envelope {
        Envelope::new(
            "ta\"ble",
            &raw(r#"{"type":"object","properties":{"id":{"type":["null","integer"]}}}"#),
            &["id".to_string()],
        )
    }

    /// Packs messages of the given sizes (padding a string field to reach
    /// each size) and returns the message counts of the bodies sent.
    fn pack(limits: Limits, sizes: &[usize]) -> Result<Vec<usize>, usize> {
        let env = envelope();
        let mut pending = Pending::new(limits);
        let mut sent = Vec::new();
        let mut seq = Sequence::default();
        let send = |pending: &mut Pending, sent: &mut Vec<usize>| {
            let n = pending.len();
            let want = pending.body_len(&env);
            let body = pending.take_body(&env);
            assert_eq!(body.len(), want, "measured size is exact");
            assert!(body.len() <= limits.bytes);
            let v: Value = serde_json::from_slice(&body).expect("body is JSON");
            assert_eq!(v["messages"].as_array().map(Vec::len), Some(n));
            sent.push(n);
        };
        for (i, &size) in sizes.iter().enumerate() {
            let mut msg = Vec::new();
            let base = {
                let mut m = Vec::new();
                encode_message(
                    &mut m,
                    1_700_000_000_000_000 + i as u64,
                    &raw(r#"{"p":""}"#),
                );
                m.len()
            };
            let pad = "x".repeat(size.saturating_sub(base));
            encode_message(
                &mut msg,
                seq.next(1_700_000_000_000_000),
                &raw(&format!(r#"{{"p":"{pad}"}}"#)),
            );
            assert_eq!(msg.len(), size.max(base));
            match pending.place(&env, msg.len()) {
                Place::TooLarge { .. } => return Err(i),
                Place::AfterSend => {
                    send(&mut pending, &mut sent);
                    pending.push(&msg);
                }
                Place::Here => pending.push(&msg),
            }
            if pending.is_full() {
                send(&mut pending, &mut sent);
            }
        }
        if !pending.is_empty() {
            send(&mut pending, &mut sent);
        }
        Ok(sent)
    }

    #[test]
    fn bodies_fill_to_the_exact_limit() {
        let overhead = envelope().overhead();
        let small = Limits {
            messages: 1000,
            bytes: overhead + 200,
        };
        type Case = (Limits, Vec<usize>, Result<Vec<usize>, usize>);
        let cases: Vec<Case> = vec![
            // 99 + 1 + 100 = 200 fits exactly; one more byte does not
            (small, vec![99, 100, 99, 100], Ok(vec![2, 2])),
            (small, vec![99, 100, 99, 101], Ok(vec![2, 1, 1])),
            (small, vec![200], Ok(vec![1])),
            (small, vec![201], Err(0)),
            (small, vec![120, 201], Err(1)),
            (small, vec![66, 66, 66, 70], Ok(vec![3, 1])),
            // the message count limit, and batch_size below it
            (
                Limits::for_batch_size(9000),
                vec![40; 2500],
                Ok(vec![1000, 1000, 500]),
            ),
            (
                Limits::for_batch_size(300),
                vec![40; 700],
                Ok(vec![300, 300, 100]),
            ),
            // close to 2 MiB: each near-limit record alone, small ones packed
            // into the space left
            (
                Limits::for_batch_size(9000),
                vec![
                    MAX_BODY_BYTES - overhead - 1000,
                    500,
                    498,
                    400,
                    MAX_BODY_BYTES - overhead,
                ],
                Ok(vec![3, 1, 1]),
            ),
            (
                Limits::for_batch_size(9000),
                vec![MAX_BODY_BYTES - overhead + 1],
                Err(0),
            ),
        ];
        for (limits, sizes, want) in cases {
            let got = pack(limits, &sizes);
            assert_eq!(got, want, "{limits:?} {:?}", &sizes[..sizes.len().min(6)]);
        }
    }

    #[test]
    fn envelope_and_messages_make_the_documented_body() {
        let env = envelope();
        let mut p = Pending::new(Limits::for_batch_size(10));
        let mut m = Vec::new();
        encode_message(&mut m, 7, &raw(r#"{"id":1,"d":1.50}"#));
        p.push(&m);
        m.clear();
        encode_message(
            &mut m,
            8,
            &raw(r#"{"id":2,"_sdc_deleted_at":"2024-01-01T00:00:00Z"}"#),
        );
        p.push(&m);
        let body = p.take_body(&env);
        assert_eq!(
            std::str::from_utf8(&body).expect("utf8"),
            r#"{"table_name":"ta\"ble","schema":{"type":"object","properties":{"id":{"type":["null","integer"]}}},"messages":[{"action":"upsert","sequence":7,"data":{"id":1,"d":1.50}},{"action":"upsert","sequence":8,"data":{"id":2,"_sdc_deleted_at":"2024-01-01T00:00:00Z"}}],"key_names":["id"]}"#
        );
        assert!(p.is_empty());
    }

    #[test]
    fn sequence_rises_strictly_even_when_the_clock_stalls_or_steps_back() {
        let mut s = Sequence::default();
        let clock = [100u64, 100, 100, 250, 90, 90, 251, 1000];
        let got: Vec<u64> = clock.iter().map(|&t| s.next(t)).collect();
        assert_eq!(got, vec![100, 101, 102, 250, 251, 252, 253, 1000]);
    }

    #[test]
    fn batch_size_maps_to_messages_per_request() {
        for (batch_size, want) in [(9000, 1000), (1000, 1000), (999, 999), (1, 1), (0, 1)] {
            assert_eq!(Limits::for_batch_size(batch_size).messages, want);
        }
    }
}
