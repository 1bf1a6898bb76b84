//! gRPC message compression as grpc-go servers do it, for `snappy`.
//!
//! PlanetScale's Go clients (singer-tap, airbyte-source, through
//! planetscale/psdb) send every request with `grpc-encoding: snappy`, the
//! compressor Vitess registers in its gRPC packages, and a grpc-go server
//! answers in the encoding the request used. tonic has no snappy codec and
//! refuses such a request (`Unimplemented: Content is compressed with
//! 'snappy' which isn't supported`), so this layer sits in front of tonic:
//! - a request whose `grpc-encoding` is `snappy` has the header taken off
//!   and each compressed message (flag 1) replaced by its plain bytes, so
//!   tonic sees an uncompressed call;
//! - the response of such a request carries `grpc-encoding: snappy` and
//!   each message compressed (flag 1).
//!
//! Requests with no encoding pass through untouched, in both directions, so
//! the tap and the emulator's other clients see no difference. Any other
//! encoding is left to tonic, which refuses it as grpc-go refuses an
//! unregistered one.
//!
//! "snappy" in Vitess's compressor is the Snappy *framing* format
//! (golang/snappy's buffered writer and reader), which `snap::write` and
//! `snap::read` implement. A decompressed message is bounded by
//! [`MAX_MESSAGE_BYTES`] so a compressed bomb fails the call, not the
//! process.

use std::io::{Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderValue, Request, Response};
use http_body::{Body as HttpBody, Frame};
use tonic::body::Body;
use tonic::Status;

/// The largest message the emulator's services decode (as their
/// `max_decoding_message_size`).
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;

const ENCODING: &str = "grpc-encoding";
const SNAPPY: &str = "snappy";
/// gRPC's length-prefixed message header: a compressed flag and a
/// big-endian length.
const HEADER: usize = 5;

/// Which way the messages of a body are rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Compressed messages in, plain messages out (a request).
    Decompress,
    /// Plain messages in, compressed messages out (a response).
    Compress,
}

/// The tower layer the gRPC server is built with.
#[derive(Debug, Clone, Copy, Default)]
pub struct SnappyLayer;

impl<S> tower_layer::Layer<S> for SnappyLayer {
    type Service = Snappy<S>;
    fn layer(&self, inner: S) -> Snappy<S> {
        Snappy { inner }
    }
}

/// The service [`SnappyLayer`] wraps around tonic's routes.
#[derive(Debug, Clone)]
pub struct Snappy<S> {
    inner: S,
}

impl<S> tower_service::Service<Request<Body>> for Snappy<S>
where
    S: tower_service::Service<Request<Body>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let snappy = req
            .headers()
            .get(ENCODING)
            .is_some_and(|v| v.as_bytes() == SNAPPY.as_bytes());
        if !snappy {
            return Box::pin(self.inner.call(req));
        }
        let (mut parts, body) = req.into_parts();
        parts.headers.remove(ENCODING);
        let body = Body::new(Reframed::new(body, Direction::Decompress));
        let fut = self.inner.call(Request::from_parts(parts, body));
        Box::pin(async move {
            let res = fut.await?;
            let (mut parts, body) = res.into_parts();
            parts
                .headers
                .insert(ENCODING, HeaderValue::from_static(SNAPPY));
            Ok(Response::from_parts(
                parts,
                Body::new(Reframed::new(body, Direction::Compress)),
            ))
        })
    }
}

/// A body whose gRPC messages are rewritten one by one as they complete:
/// bytes are gathered until a whole message is there, so a message split
/// over HTTP/2 frames (or frames holding several) comes out whole.
struct Reframed {
    inner: Body,
    pending: BytesMut,
    direction: Direction,
}

impl Reframed {
    fn new(inner: Body, direction: Direction) -> Self {
        Reframed {
            inner,
            pending: BytesMut::new(),
            direction,
        }
    }

    /// Every whole message gathered so far, rewritten, in one buffer.
    fn take_messages(&mut self) -> Result<Option<Bytes>, Status> {
        let mut out = BytesMut::new();
        while let Some(len) = whole_message(&self.pending)? {
            let mut message = self.pending.split_to(HEADER + len);
            let compressed = message[0] == 1;
            message.advance(HEADER);
            let (flag, payload) = match (self.direction, compressed) {
                (Direction::Decompress, true) => (0, decompress(&message, MAX_MESSAGE_BYTES)?),
                (Direction::Decompress, false) => (0, message.to_vec()),
                (Direction::Compress, false) => (1, compress(&message)?),
                // tonic itself compresses nothing here; pass it on as it is.
                (Direction::Compress, true) => (1, message.to_vec()),
            };
            let len = u32::try_from(payload.len())
                .map_err(|_| Status::resource_exhausted("gRPC message over 4 GiB"))?;
            out.reserve(HEADER + payload.len());
            out.put_u8(flag);
            out.put_u32(len);
            out.put_slice(&payload);
        }
        Ok((!out.is_empty()).then(|| out.freeze()))
    }
}

/// The length of the message at the start of `buf` once all of it is
/// there.
fn whole_message(buf: &[u8]) -> Result<Option<usize>, Status> {
    if buf.len() < HEADER {
        return Ok(None);
    }
    if buf[0] > 1 {
        return Err(Status::internal(format!(
            "gRPC message with compressed flag {} (only 0 and 1 exist)",
            buf[0]
        )));
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    Ok((buf.len() >= HEADER + len).then_some(len))
}

fn compress(plain: &[u8]) -> Result<Vec<u8>, Status> {
    let mut w = snap::write::FrameEncoder::new(Vec::with_capacity(plain.len() / 2 + 64));
    w.write_all(plain)
        .map_err(|e| Status::internal(format!("snappy compression: {e}")))?;
    w.into_inner()
        .map_err(|e| Status::internal(format!("snappy compression: {e}")))
}

/// Decompresses one message, refusing one that grows past `limit`.
fn decompress(compressed: &[u8], limit: usize) -> Result<Vec<u8>, Status> {
    let mut out = Vec::new();
    snap::read::FrameDecoder::new(compressed)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            Status::internal(format!(
                "grpc: failed to decompress the received message: {e}"
            ))
        })?;
    if out.len() > limit {
        return Err(Status::resource_exhausted(format!(
            "grpc: received message after decompression larger than max ({limit})"
        )));
    }
    Ok(out)
}

impl HttpBody for Reframed {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        loop {
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(mut data) => {
                        let chunk = data.copy_to_bytes(data.remaining());
                        self.pending.extend_from_slice(&chunk);
                        if let Some(out) = self.take_messages()? {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(trailers) => {
                        return Poll::Ready(Some(self.end().map(|()| trailers)));
                    }
                },
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => return Poll::Ready(self.end().err().map(Err)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_empty() && self.inner.is_end_stream()
    }
}

impl Reframed {
    /// The body ended: a message cut short is an error, not dropped bytes.
    fn end(&self) -> Result<(), Status> {
        if self.pending.is_empty() {
            Ok(())
        } else {
            Err(Status::internal(format!(
                "gRPC body ended inside a message ({} bytes of it)",
                self.pending.len()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(flag: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![flag];
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    fn rewrite(direction: Direction, chunks: &[&[u8]]) -> Result<Vec<u8>, Status> {
        let mut r = Reframed::new(Body::empty(), direction);
        let mut out = Vec::new();
        for c in chunks {
            r.pending.extend_from_slice(c);
            if let Some(b) = r.take_messages()? {
                out.extend_from_slice(&b);
            }
        }
        r.end()?;
        Ok(out)
    }

    #[test]
    fn compressing_then_decompressing_gives_the_messages_back() {
        let a = b"hello hello hello hello".repeat(100);
        let b: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let plain = [framed(0, &a), framed(0, &b), framed(0, b"")].concat();
        let compressed = rewrite(Direction::Compress, &[&plain]).expect("ok");
        assert_eq!(compressed[0], 1);
        assert!(compressed.len() < plain.len());
        // Fed back one byte at a time, as frames may split it anywhere.
        let bytes: Vec<&[u8]> = compressed.chunks(1).collect();
        let back = rewrite(Direction::Decompress, &bytes).expect("ok");
        assert_eq!(back, plain);
    }

    #[test]
    fn the_stream_format_is_golang_snappys() {
        // golang/snappy's framing starts every stream with this chunk.
        let c = compress(b"x").expect("ok");
        assert_eq!(&c[..10], b"\xff\x06\x00\x00sNaPpY");
    }

    #[test]
    fn bad_input_is_a_status_not_a_panic() {
        let e = rewrite(Direction::Decompress, &[&framed(1, b"not snappy")]).expect_err("an error");
        assert!(e.message().contains("decompress"), "{e}");
        let e = rewrite(Direction::Decompress, &[&framed(0, b"abc")[..6]]).expect_err("an error");
        assert!(e.message().contains("inside a message"), "{e}");
        let e = rewrite(Direction::Decompress, &[&framed(7, b"abc")]).expect_err("an error");
        assert!(e.message().contains("flag 7"), "{e}");
    }

    #[test]
    fn a_bomb_is_refused() {
        let big = vec![0u8; (1 << 20) + 1];
        let c = compress(&big).expect("ok");
        assert!(c.len() < 64 << 10);
        let e = decompress(&c, 1 << 20).expect_err("an error");
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert_eq!(decompress(&c, 2 << 20).expect("ok").len(), big.len());
    }
}
