//! Wire messages decoded by hand, where prost's generated types cost the
//! most: per row, per row change, per response.
//!
//! Each type keeps the wire form exactly (tests hold it to prost's own
//! encoding) and the public shape the rest of the tap reads; `build.rs`
//! names them in the generated code with `extern_path`. The rest of the
//! protos stay generated.
//!
//! - [`row::Row`]: a row's lengths and cells left as slices of the receive
//!   buffer, no allocation per row.
//! - [`query_result::QueryResult`]: repeated field lists compared, not
//!   decoded again.
//! - [`vstream_response::VStreamResponse`]: the event vector sized once
//!   from the previous response, not grown event by event.
//! - [`row_event::RowEvent`]: a ROW event's one row change held inline, no
//!   allocation per copied row.
//! - [`vstream_batch::VStreamBatch`]: a response as a session reads it,
//!   plain ROW events read straight into their rows.

pub mod query_result;
pub mod row;
pub mod row_event;
pub mod vstream_batch;
pub mod vstream_response;
