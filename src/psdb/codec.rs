//! The gRPC codec of both clients: prost, decoding each message from one
//! contiguous slice.
//!
//! tonic hands a decoder the message inside its receive buffer, a
//! `BytesMut`. prost reading straight from it pays `BytesMut`'s bookkeeping
//! on every step (about 25 varints a copied row, each an `advance`), and
//! every row's cells become a `split_to` of it. Taken first as one `Bytes`
//! (a constant-time split, no copy), the message decodes through `Bytes`'s
//! plain slice steps, and rows and cells are slices of it.
//!
//! `build.rs` names this codec in the generated clients (`codec_path`).

use std::marker::PhantomData;

use prost::bytes::Buf;
use prost::Message;
use tonic::codec::{DecodeBuf, Decoder};
use tonic::Status;

/// A prost codec for requests `T` and responses `U`.
#[derive(Debug, Clone)]
pub struct Codec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Codec {
            _types: PhantomData,
        }
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = tonic_prost::ProstEncoder<T>;
    type Decoder = SliceDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        SliceDecoder { _type: PhantomData }
    }
}

/// Decodes `U` from the message taken whole as one `Bytes`.
#[derive(Debug)]
pub struct SliceDecoder<U> {
    _type: PhantomData<U>,
}

impl<U: Message + Default> Decoder for SliceDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let message = buf.copy_to_bytes(buf.remaining());
        U::decode(message).map(Some).map_err(|e| {
            Status::internal(format!(
                "the server sent a message that does not decode: {e}"
            ))
        })
    }
}
