//! `vtgate.VStreamResponse`, with its event vector sized up front.
//!
//! A copy over VStream sends each row as its own event, some fifty to a
//! response. prost's generated type grows the vector one event at a time:
//! six reallocations, each copying every event so far. Responses of one
//! stream are alike, so each decoding thread remembers how many events the
//! last one held and reserves that many before the first.

use std::cell::Cell;

use prost::bytes::{Buf, BufMut};
use prost::encoding::{self, DecodeContext, WireType};
use prost::{DecodeError, Message};

use crate::pb::binlogdata::VEvent;

const EVENTS: u32 = 1;

/// A room no response needs, however large its last one was.
const MAX_RESERVE: usize = 4096;

thread_local! {
    static LAST_COUNT: Cell<usize> = const { Cell::new(0) };
}

/// One response of a VStream: its events in order.
#[derive(Clone, Default, PartialEq, Debug)]
pub struct VStreamResponse {
    pub events: Vec<VEvent>,
}

impl Message for VStreamResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        for ev in &self.events {
            encoding::message::encode(EVENTS, ev, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if tag != EVENTS {
            return encoding::skip_field(wire_type, tag, buf, ctx);
        }
        if self.events.is_empty() {
            self.events
                .reserve(LAST_COUNT.with(Cell::get).min(MAX_RESERVE));
        }
        encoding::message::merge_repeated(wire_type, &mut self.events, buf, ctx)?;
        LAST_COUNT.with(|c| c.set(c.get().max(self.events.len()).min(MAX_RESERVE)));
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        encoding::message::encoded_len_repeated(EVENTS, &self.events)
    }

    fn clear(&mut self) {
        self.events.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::binlogdata::VEventType;

    #[derive(Clone, PartialEq, prost::Message)]
    struct Generated {
        #[prost(message, repeated, tag = "1")]
        events: Vec<VEvent>,
    }

    #[test]
    fn responses_match_the_generated_encoding() {
        let ev = |t: VEventType, statement: &str| VEvent {
            r#type: t as i32,
            statement: statement.into(),
            ..Default::default()
        };
        for events in [
            vec![],
            vec![ev(VEventType::Begin, "")],
            (0..100)
                .map(|i| ev(VEventType::Ddl, &i.to_string()))
                .collect(),
            vec![ev(VEventType::Commit, "")],
        ] {
            let g = Generated { events };
            let wire = g.encode_to_vec();
            let r = VStreamResponse::decode(&wire[..]).expect("decodes");
            assert_eq!(r.events, g.events);
            assert_eq!(r.encode_to_vec(), wire);
            assert_eq!(r.encoded_len(), wire.len());
        }
    }
}
