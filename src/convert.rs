//! Vitess cells → JSON values, written straight into the output buffer.
//!
//! The catalog is the contract: each column is written as the JSON type its
//! catalog property declares ([`Target`]), reading the cell according to the
//! Vitess field type. So a Go-made catalog that types a decimal as `string`
//! keeps getting strings, while our own discovery's `number` gets exact
//! digits. Both text forms the server uses are handled: copy-phase text
//! (MySQL SELECT output) and change-phase text from older Vitess (a decimal
//! without its leading zero, `1.5E+00` floats, an ENUM as its index, a SET as
//! a bitmask).
//!
//! A [`RecordPlan`] is built once per field set, so the per-row work is a
//! walk over lengths and a match per cell, with no allocation beyond the
//! output buffer (JSON cells holding line breaks and invalid UTF-8 text are
//! the rare exceptions). Nothing panics on server data: a malformed row or
//! an unconvertible value is a [`ConvertError`] naming the column, and a zero
//! date is a null with a counted warning.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::Value;

use crate::pb::query::{Field, Row, Type};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("row is malformed: {0}")]
    Malformed(String),
    #[error("column `{column}`: {problem}")]
    Value { column: String, problem: CellError },
}

/// The JSON type a catalog property asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Integer,
    Number,
    Boolean,
    /// A string, written as the server's text.
    Text,
    /// `format: date`.
    Date,
    /// `format: date-time`.
    DateTime,
    /// `contentEncoding: base64`.
    Base64,
    /// `contentEncoding: base16`: lowercase hex.
    Base16,
    /// Object, array, or a list of several JSON types.
    Json,
}

impl Target {
    /// Reads a property schema. The first non-null type decides, except that
    /// a list holding object or array means JSON.
    pub fn of(schema: &Value) -> Target {
        let types: Vec<&str> = match schema.get("type") {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let non_null: Vec<&str> = types.into_iter().filter(|t| *t != "null").collect();
        if non_null.iter().any(|t| *t == "object" || *t == "array") || non_null.len() > 1 {
            return Target::Json;
        }
        match non_null.first().copied() {
            Some("integer") => Target::Integer,
            Some("number") => Target::Number,
            Some("boolean") => Target::Boolean,
            Some("string") | None => {
                match schema.get("contentEncoding").and_then(Value::as_str) {
                    Some("base64") => return Target::Base64,
                    Some("base16") => return Target::Base16,
                    _ => {}
                }
                match schema.get("format").and_then(Value::as_str) {
                    Some("date") => Target::Date,
                    Some("date-time") => Target::DateTime,
                    _ => Target::Text,
                }
            }
            Some(_) => Target::Json,
        }
    }
}

/// What happened to a cell besides being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    Ok,
    /// A zero or invalid date written as null.
    ZeroDate,
    /// A value the catalog type could not hold, written as its text.
    Fallback,
    /// Text not valid in its column's charset, written with U+FFFD.
    BadText,
}

use crate::charset::{decode, Charset};
pub use crate::json::write_json_str;
use crate::json::{write_int, write_text, write_text_checked};

fn is_digits(b: &[u8]) -> bool {
    !b.is_empty() && b.iter().all(u8::is_ascii_digit)
}

/// Writes an integer literal from decimal text, dropping leading zeros
/// (`0000` → `0`, as YEAR sends). `None` when the text is not an integer.
fn write_integer(out: &mut Vec<u8>, text: &[u8]) -> Option<()> {
    // What servers send nearly always: already a JSON integer.
    let unsigned = text.strip_prefix(b"-").unwrap_or(text);
    if matches!(unsigned.first(), Some(b'1'..=b'9')) && unsigned.iter().all(u8::is_ascii_digit) {
        out.extend_from_slice(text);
        return Some(());
    }
    let (neg, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    if !is_digits(digits) {
        return None;
    }
    let first = digits
        .iter()
        .position(|d| *d != b'0')
        .unwrap_or(digits.len() - 1);
    let digits = &digits[first..];
    if neg && digits != b"0" {
        out.push(b'-');
    }
    out.extend_from_slice(digits);
    Some(())
}

/// Writes a DECIMAL as an exact JSON number: restores a missing leading
/// zero (`.50`, `-.5`), drops redundant leading zeros and a bare trailing
/// dot. `None` when the text is not a plain decimal.
fn write_decimal(out: &mut Vec<u8>, text: &[u8]) -> Option<()> {
    if canonical_decimal(text) {
        out.extend_from_slice(text);
        return Some(());
    }
    rewrite_decimal(out, text)
}

/// [`write_decimal`] for text that needs changing.
fn rewrite_decimal(out: &mut Vec<u8>, text: &[u8]) -> Option<()> {
    let (neg, rest) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    let (int, frac) = match rest.iter().position(|b| *b == b'.') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &rest[rest.len()..]),
    };
    if (int.is_empty() && frac.is_empty())
        || !int.iter().all(u8::is_ascii_digit)
        || !frac.iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    let first = int.iter().position(|d| *d != b'0').unwrap_or(int.len());
    let int = &int[first..];
    let zero = int.is_empty() && frac.iter().all(|d| *d == b'0');
    if neg && !zero {
        out.push(b'-');
    }
    if int.is_empty() {
        out.push(b'0');
    } else {
        out.extend_from_slice(int);
    }
    if !frac.is_empty() {
        out.push(b'.');
        out.extend_from_slice(frac);
    }
    Some(())
}

/// Whether a DECIMAL's text is already what [`write_decimal`] would write
/// (what copies send nearly always): one scan, then a plain copy.
fn canonical_decimal(text: &[u8]) -> bool {
    let unsigned = text.strip_prefix(b"-").unwrap_or(text);
    let (int, frac) = match unsigned.iter().position(|b| *b == b'.') {
        Some(i) => (&unsigned[..i], Some(&unsigned[i + 1..])),
        None => (unsigned, None),
    };
    let int_ok = match int {
        [b'0'] => true,
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    let frac_ok = frac.is_none_or(|f| !f.is_empty() && f.iter().all(u8::is_ascii_digit));
    // A minus sign stays only on a value that is not zero.
    let sign_ok = unsigned.len() == text.len()
        || int != b"0"
        || frac.is_some_and(|f| f.iter().any(|d| *d != b'0'));
    int_ok && frac_ok && sign_ok
}

/// Writes a float in its shortest exact form; NaN and infinities (never
/// valid JSON) become null.
fn write_float(out: &mut Vec<u8>, text: &[u8]) -> Option<()> {
    // ASCII trim: `str::trim` looks for Unicode spaces, at a third of the
    // cost of the whole conversion.
    let text = text.trim_ascii();
    if plain_float(text) {
        out.extend_from_slice(text);
        return Some(());
    }
    if plain_integer(text) {
        // A whole number is written with `.0`, as JSON writers write a
        // double.
        out.extend_from_slice(text);
        out.extend_from_slice(b".0");
        return Some(());
    }
    reformat_float(out, text)
}

/// Whether a float's text is a whole number of at most 15 digits without
/// leading zeros (`-0` too): a double holds it exactly, and its shortest
/// digits are its own.
fn plain_integer(text: &[u8]) -> bool {
    match text.strip_prefix(b"-").unwrap_or(text) {
        [b'0'] => true,
        [b'1'..=b'9', rest @ ..] => rest.len() < 15 && rest.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

/// [`write_float`] for text that is not written as it is.
fn reformat_float(out: &mut Vec<u8>, text: &[u8]) -> Option<()> {
    let s = std::str::from_utf8(text).ok()?;
    let v: f64 = s.parse().ok()?;
    if v.is_finite() {
        let _ = serde_json::to_writer(&mut *out, &v);
    } else {
        out.extend_from_slice(b"null");
    }
    Some(())
}

/// Whether a float's text can be written as it is: a plain decimal
/// (`-?(0|[1-9]d*).d*[1-9]`) of at most 17 significant digits, in the range
/// JSON writers give without an exponent (at most 16 integer digits, at
/// most four zeros after `0.`). MySQL prints a DOUBLE in the shortest
/// digits that read back as it, which are the digits parsing and writing
/// it again would give: the parse and the shortest-digits search, about
/// a tenth of a copied row's work for one double, are skipped. (Digits that
/// are not the shortest would still name the same double, so the value is
/// exact either way.)
fn plain_float(text: &[u8]) -> bool {
    let unsigned = text.strip_prefix(b"-").unwrap_or(text);
    let Some(dot) = unsigned.iter().position(|b| *b == b'.') else {
        return false;
    };
    let (int, frac) = (&unsigned[..dot], &unsigned[dot + 1..]);
    if !frac.last().is_some_and(|d| (b'1'..=b'9').contains(d))
        || !frac.iter().all(u8::is_ascii_digit)
    {
        return false;
    }
    let significant = match int {
        [b'0'] => {
            let zeros = frac.iter().take_while(|d| **d == b'0').count();
            if zeros > 4 {
                return false;
            }
            frac.len() - zeros
        }
        [b'1'..=b'9', rest @ ..] if rest.len() < 16 && rest.iter().all(u8::is_ascii_digit) => {
            int.len() + frac.len()
        }
        _ => return false,
    };
    significant <= 17
}

/// Big-endian bytes (BIT) → unsigned integer.
fn bits_value(bytes: &[u8]) -> Option<u64> {
    if bytes.len() > 8 {
        return None;
    }
    Some(bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}

/// Parsed `YYYY-MM-DD[ HH:MM:SS[.f…]]`. Borrowed, no allocation.
struct DateTimeText<'a> {
    date: &'a [u8],
    time: Option<&'a [u8]>,
}

fn parse_datetime(text: &[u8]) -> Option<DateTimeText<'_>> {
    if text.len() < 10 || text[4] != b'-' || text[7] != b'-' {
        return None;
    }
    let date = &text[..10];
    if !date
        .iter()
        .enumerate()
        .all(|(i, b)| i == 4 || i == 7 || b.is_ascii_digit())
    {
        return None;
    }
    let time = if text.len() > 10 {
        if text[10] != b' ' && text[10] != b'T' {
            return None;
        }
        let t = &text[11..];
        if t.len() < 8
            || t[2] != b':'
            || t[5] != b':'
            || !t[..8]
                .iter()
                .enumerate()
                .all(|(i, b)| i == 2 || i == 5 || b.is_ascii_digit())
        {
            return None;
        }
        if t.len() > 8 && (t[8] != b'.' || !t[9..].iter().all(u8::is_ascii_digit)) {
            return None;
        }
        Some(t)
    } else {
        None
    };
    Some(DateTimeText { date, time })
}

fn num(b: &[u8]) -> u32 {
    b.iter().fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'))
}

/// Whether a date is a real calendar day (zero dates and MySQL's lax
/// `2024-02-30` are not).
fn valid_date(date: &[u8]) -> bool {
    let (y, m, d) = (num(&date[..4]), num(&date[5..7]), num(&date[8..10]));
    if y == 0 || !(1..=12).contains(&m) || d == 0 {
        return false;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    d <= days
}

fn valid_time(t: &[u8]) -> bool {
    num(&t[..2]) < 24 && num(&t[3..5]) < 60 && num(&t[6..8]) < 60
}

/// Maps an ENUM index or SET bitmask to member text. Text that already is
/// a member (or a list of members) is kept; airbyte's rule of mapping any
/// integer is ambiguous for numeric members, so members win.
fn enum_set_text(ty: Type, text: &[u8], members: &[String]) -> Option<String> {
    if members.is_empty() {
        return None;
    }
    let s = std::str::from_utf8(text).ok()?;
    match ty {
        Type::Enum => {
            if members.iter().any(|m| m == s) || !is_digits(text) {
                return None;
            }
            let idx: usize = s.parse().ok()?;
            match idx {
                0 => Some(String::new()),
                i if i <= members.len() => Some(members[i - 1].clone()),
                _ => None,
            }
        }
        Type::Set => {
            if s.is_empty()
                || s.split(',').all(|p| members.iter().any(|m| m == p))
                || !is_digits(text)
            {
                return None;
            }
            let mask: u64 = s.parse().ok()?;
            if members.len() < 64 && mask >> members.len() != 0 {
                return None;
            }
            let parts: Vec<&str> = members
                .iter()
                .enumerate()
                .filter(|(i, _)| *i < 64 && mask & (1u64 << i) != 0)
                .map(|(_, m)| m.as_str())
                .collect();
            Some(parts.join(","))
        }
        _ => None,
    }
}

/// Whether an ENUM or SET value of a non-UTF-8 column is to be taken as
/// it came rather than decoded by the column's charset: an index or bitmask
/// (old Vitess's change forms), or members as UTF-8 text. vttablet sends a
/// copied row's members in the column's charset, but a change's as the
/// member text of its schema, in UTF-8, under the same field.
fn members_as_sent(ty: Type, charset: Charset, members: &[String], raw: &[u8]) -> bool {
    if !matches!(ty, Type::Enum | Type::Set) {
        return false;
    }
    if is_digits(raw) {
        return true;
    }
    let is_member = |part: &[u8]| members.iter().any(|m| m.as_bytes() == part);
    let all_members = |text: &[u8]| match ty {
        Type::Set => text.is_empty() || text.split(|b| *b == b',').all(is_member),
        _ => is_member(text),
    };
    // UTF-8 member text, unless the bytes are members in their own charset too.
    all_members(raw) && !all_members(&decode(charset, raw).0)
}

/// Writes one non-NULL cell as `target`. Pure; table-tested.
pub fn write_cell(
    out: &mut Vec<u8>,
    ty: Type,
    target: Target,
    members: &[String],
    text: &[u8],
) -> Result<Note, CellError> {
    let start = out.len();
    let ok = |done: Option<()>| done.map(|()| Note::Ok);
    let (note, expected) = match target {
        Target::Integer => (ok(integer_cell(out, ty, text)), "an integer"),
        Target::Number => (ok(number_cell(out, ty, text)), "a number"),
        Target::Boolean => (boolean_cell(out, ty, text), "a boolean"),
        Target::Text => (Some(text_cell(out, ty, members, text)), "text"),
        Target::Date | Target::DateTime => (date_cell(out, ty, target, text), "a date"),
        Target::Base64 => (ok(base64_cell(out, text)), "base64"),
        Target::Base16 => (Some(base16_cell(out, text)), "hex"),
        Target::Json => (Some(json_cell(out, text)), "JSON"),
    };
    note.ok_or_else(|| {
        out.truncate(start);
        CellError {
            ty,
            shown: String::from_utf8_lossy(&text[..text.len().min(64)]).into_owned(),
            expected,
        }
    })
}

/// Why a value could not be written as its catalog type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read {ty:?} value `{shown}` as {expected}")]
pub struct CellError {
    pub ty: Type,
    /// The value's first 64 bytes, as text.
    pub shown: String,
    pub expected: &'static str,
}

fn integer_cell(out: &mut Vec<u8>, ty: Type, text: &[u8]) -> Option<()> {
    match ty {
        Type::Bit => bits_value(text).map(|v| write_int(out, v)),
        Type::Decimal | Type::Float32 | Type::Float64 => {
            write_decimal(out, text).or_else(|| write_float(out, text))
        }
        // ENUM's index and SET's bitmask are the integer.
        _ => write_integer(out, text),
    }
}

fn number_cell(out: &mut Vec<u8>, ty: Type, text: &[u8]) -> Option<()> {
    match ty {
        Type::Bit => bits_value(text).map(|v| write_int(out, v)),
        Type::Float32 | Type::Float64 => write_float(out, text),
        _ => write_decimal(out, text).or_else(|| write_float(out, text)),
    }
}

fn boolean_cell(out: &mut Vec<u8>, ty: Type, text: &[u8]) -> Option<Note> {
    let v = match ty {
        Type::Bit => bits_value(text).map(|v| v != 0),
        _ if is_digits(text) || text.first() == Some(&b'-') => {
            Some(text.iter().any(|b| b.is_ascii_digit() && *b != b'0'))
        }
        _ => match text {
            b"true" | b"TRUE" => Some(true),
            b"false" | b"FALSE" => Some(false),
            _ => None,
        },
    }?;
    out.extend_from_slice(if v { b"true" } else { b"false" });
    Some(Note::Ok)
}

fn text_cell(out: &mut Vec<u8>, ty: Type, members: &[String], text: &[u8]) -> Note {
    if let Some(mapped) = enum_set_text(ty, text, members) {
        write_json_str(out, &mapped);
    } else if ty == Type::Bit {
        match bits_value(text) {
            Some(v) => {
                out.push(b'"');
                write_int(out, v);
                out.push(b'"');
            }
            None => write_text(out, text),
        }
    } else if ty == Type::Decimal {
        // Restore the leading zero even when the catalog says string.
        quoted_number(out, text, write_decimal);
    } else if matches!(ty, Type::Float32 | Type::Float64) {
        quoted_number(out, text, write_float);
    } else if !write_text_checked(out, text) {
        return Note::BadText;
    }
    Note::Ok
}

/// A number written as a JSON string, in the form `write` gives it, or
/// the text as it is when `write` refuses it or gives `null`. Written in
/// place: numbers need no escaping.
fn quoted_number(out: &mut Vec<u8>, text: &[u8], write: fn(&mut Vec<u8>, &[u8]) -> Option<()>) {
    let start = out.len();
    out.push(b'"');
    if write(out, text).is_some() && &out[start + 1..] != b"null" {
        out.push(b'"');
    } else {
        out.truncate(start);
        write_text(out, text);
    }
}

fn date_cell(out: &mut Vec<u8>, ty: Type, target: Target, text: &[u8]) -> Option<Note> {
    let Some(dt) = parse_datetime(text) else {
        // TIME or other text under a date format: keep the text.
        if ty == Type::Time || text.is_empty() {
            write_text(out, text);
            return Some(Note::Fallback);
        }
        return None;
    };
    if !valid_date(dt.date) || dt.time.is_some_and(|t| !valid_time(t)) {
        out.extend_from_slice(b"null");
        return Some(Note::ZeroDate);
    }
    out.push(b'"');
    out.extend_from_slice(dt.date);
    if target == Target::DateTime {
        out.push(b'T');
        out.extend_from_slice(dt.time.unwrap_or(b"00:00:00"));
        out.extend_from_slice(b"+00:00");
    }
    out.push(b'"');
    Some(Note::Ok)
}

fn base64_cell(out: &mut Vec<u8>, text: &[u8]) -> Option<()> {
    out.push(b'"');
    let at = out.len();
    let len = base64::encoded_len(text.len(), true).unwrap_or(0);
    out.resize(at + len, 0);
    let n = B64.encode_slice(text, &mut out[at..]).ok()?;
    out.truncate(at + n);
    out.push(b'"');
    Some(())
}

fn base16_cell(out: &mut Vec<u8>, text: &[u8]) -> Note {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(text.len() * 2 + 2);
    out.push(b'"');
    for b in text {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 0x0f)]);
    }
    out.push(b'"');
    Note::Ok
}

fn json_cell(out: &mut Vec<u8>, text: &[u8]) -> Note {
    if serde_json::from_slice::<serde::de::IgnoredAny>(text).is_err() {
        write_text(out, text);
        return Note::Fallback;
    }
    if text.iter().any(|b| *b == b'\n' || *b == b'\r') {
        // One message per line: re-serialize compactly.
        match serde_json::from_slice::<Value>(text) {
            Ok(v) => {
                let _ = serde_json::to_writer(&mut *out, &v);
            }
            Err(_) => write_text(out, text),
        }
    } else {
        out.extend_from_slice(text);
    }
    Note::Ok
}

/// The cells of a row as `width` cells, `None` for NULL, or what is wrong
/// with the row (its width, a malformed length, the bytes its lengths
/// claim). Reads the row twice: for the few rows that are not records (a
/// copy's last key); records read theirs once, in
/// [`RecordPlan::write_record`].
pub fn cells(row: &Row, width: usize) -> Result<Vec<Option<&[u8]>>, ConvertError> {
    if let Some(problem) = row.problem(width) {
        return Err(ConvertError::Malformed(problem));
    }
    let mut cells = row.cells();
    (0..width)
        .map(|_| cells.next_cell())
        .collect::<Result<_, _>>()
        .map_err(|_| ConvertError::Malformed("a row changed while read".into()))
}

/// One selected catalog property, as conversion needs it.
#[derive(Debug, Clone)]
pub struct PropertySpec {
    pub name: String,
    pub target: Target,
    /// ENUM/SET members, from `sql-datatype` or the server's column type.
    pub members: Vec<String>,
    /// The column's charset from information_schema, for text whose
    /// `Field.charset` does not name one (vttablet sends 0 for charsets
    /// Vitess does not know, such as gbk and big5).
    pub charset: Option<Charset>,
}

#[derive(Debug, Clone)]
struct ColumnPlan {
    key: Key,
    prop: usize,
    ty: Type,
    /// How the text is decoded, when its charset is not UTF-8.
    decode: Option<Box<Decoding>>,
}

/// A non-UTF-8 text column's charset, and its ENUM/SET members (see
/// [`members_as_sent`]).
#[derive(Debug, Clone)]
struct Decoding {
    charset: Charset,
    members: Vec<String>,
}

/// Room for a short key, `,"name":` with a name of up to 20 bytes.
const SHORT_KEY: usize = 24;

/// A member's `,"name":`, pre-escaped (see [`RecordPlan::write_record`]
/// for the comma). Every record writes every key, so a short one is kept
/// in a fixed block: copying a fixed size compiles to two stores, where a
/// copy of a length known only at run time is a call to `memcpy`, ten of
/// them a row.
#[derive(Debug, Clone)]
enum Key {
    /// The key in the first `len` bytes of the block.
    Short {
        block: [u8; SHORT_KEY],
        len: usize,
    },
    Long(Vec<u8>),
}

impl Key {
    fn new(escaped: Vec<u8>) -> Key {
        let mut block = [0u8; SHORT_KEY];
        match block.get_mut(..escaped.len()) {
            Some(head) => {
                head.copy_from_slice(&escaped);
                Key::Short {
                    block,
                    len: escaped.len(),
                }
            }
            None => Key::Long(escaped),
        }
    }

    /// Appends the key: the whole block, then the padding cut off again.
    #[inline(always)]
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Key::Short { block, len } => {
                let end = out.len() + len;
                out.extend_from_slice(block);
                out.truncate(end);
            }
            Key::Long(key) => out.extend_from_slice(key),
        }
    }
}

/// How to turn rows of one field set into record objects.
#[derive(Debug, Clone)]
pub struct RecordPlan {
    fields: Vec<Field>,
    /// Per field: where it goes, or `None` when not selected.
    columns: Vec<Option<ColumnPlan>>,
    /// Selected properties the fields lack (dropped columns): written null.
    missing: Vec<Vec<u8>>,
}

/// Counts of notes per property while converting.
#[derive(Debug, Default, Clone)]
pub struct Warnings {
    pub zero_dates: Vec<u64>,
    pub fallbacks: Vec<u64>,
    /// Text not valid in its column's charset (written with U+FFFD).
    pub bad_text: Vec<u64>,
}

impl RecordPlan {
    /// A plan for whole rows: selected properties the fields lack (dropped
    /// columns) are written as null, so every record carries every column.
    pub fn new(fields: &[Field], props: &[PropertySpec]) -> RecordPlan {
        Self::build(fields, props, true)
    }

    /// A plan for delete rows, which carry only key columns: properties the
    /// fields lack are left out rather than written as null.
    pub fn keys_only(fields: &[Field], props: &[PropertySpec]) -> RecordPlan {
        Self::build(fields, props, false)
    }

    fn build(fields: &[Field], props: &[PropertySpec], fill_missing: bool) -> RecordPlan {
        let mut columns = Vec::with_capacity(fields.len());
        let mut seen = vec![false; props.len()];
        for f in fields {
            let idx = props.iter().position(|p| p.name == f.name);
            columns.push(idx.map(|prop| {
                seen[prop] = true;
                let mut key = Vec::with_capacity(f.name.len() + 4);
                key.push(b',');
                write_text(&mut key, &f.name);
                key.push(b':');
                let ty = Type::try_from(f.r#type).unwrap_or(Type::Varbinary);
                let text = matches!(
                    ty,
                    Type::Text | Type::Varchar | Type::Char | Type::Enum | Type::Set
                );
                let charset = Charset::of_field(f.charset, props[prop].charset);
                let decode = (text && charset.decodes()).then(|| {
                    Box::new(Decoding {
                        charset,
                        members: props[prop].members.clone(),
                    })
                });
                ColumnPlan {
                    key: Key::new(key),
                    prop,
                    ty,
                    decode,
                }
            }));
        }
        let missing = props
            .iter()
            .zip(&seen)
            .filter(|(_, s)| fill_missing && !**s)
            .map(|(p, _)| {
                let mut key = vec![b','];
                write_json_str(&mut key, &p.name);
                key.push(b':');
                key
            })
            .collect();
        RecordPlan {
            fields: fields.to_vec(),
            columns,
            missing,
        }
    }

    /// Whether this plan was built for exactly these fields.
    pub fn matches(&self, fields: &[Field]) -> bool {
        self.fields.len() == fields.len()
            && self
                .fields
                .iter()
                .zip(fields)
                .all(|(a, b)| a.name == b.name && a.r#type == b.r#type)
    }

    /// Names of selected properties the server no longer sends.
    pub fn missing_names(&self) -> Vec<String> {
        self.missing
            .iter()
            .map(|k| serde_json::from_slice::<String>(&k[1..k.len() - 1]).unwrap_or_default())
            .collect()
    }

    /// Writes one record object, `{…}`, then the `extra` members (already
    /// `"key":value` JSON), into `out`. On error `out` is left as it was.
    pub fn write_record(
        &self,
        out: &mut Vec<u8>,
        row: &Row,
        props: &[PropertySpec],
        extra: &[&[u8]],
        warnings: &mut Warnings,
    ) -> Result<(), ConvertError> {
        let start = out.len();
        let res = self.write_record_inner(out, row, props, extra, warnings);
        if res.is_err() {
            out.truncate(start);
        }
        res
    }

    /// The error for a row whose cells did not fit: what is wrong, and the
    /// first column whose length runs past the row's bytes, if one does.
    #[cold]
    fn malformed(&self, row: &Row) -> ConvertError {
        let problem = row
            .problem(self.columns.len())
            .unwrap_or_else(|| "its lengths do not fit its bytes".into());
        let mut total = 0u64;
        for (i, l) in row.lengths().enumerate() {
            if l > 0 {
                total = total.saturating_add(l as u64);
            }
            if total > row.values().len() as u64 {
                if let Some(f) = self.fields.get(i) {
                    let col = String::from_utf8_lossy(&f.name);
                    return ConvertError::Malformed(format!("{problem} (at column `{col}`)"));
                }
            }
        }
        ConvertError::Malformed(problem)
    }

    fn write_record_inner(
        &self,
        out: &mut Vec<u8>,
        row: &Row,
        props: &[PropertySpec],
        extra: &[&[u8]],
        warnings: &mut Warnings,
    ) -> Result<(), ConvertError> {
        if warnings.zero_dates.len() < props.len() {
            warnings.zero_dates.resize(props.len(), 0);
            warnings.fallbacks.resize(props.len(), 0);
            warnings.bad_text.resize(props.len(), 0);
        }
        // Every member is written after a comma; the first comma then
        // becomes the opening brace. One copy per member, no branch.
        let open = out.len();
        // The row's lengths are checked as its cells are read; a bad one
        // fails the record, which `write_record` then takes back.
        let mut cells = row.cells();
        for plan in &self.columns {
            let cell = cells.next_cell().map_err(|_| self.malformed(row))?;
            let Some(plan) = plan else { continue };
            plan.key.write(out);
            let Some(text) = cell else {
                out.extend_from_slice(b"null");
                continue;
            };
            let prop = &props[plan.prop];
            let decoded;
            let text = match &plan.decode {
                Some(d) if !members_as_sent(plan.ty, d.charset, &d.members, text) => {
                    let bad;
                    (decoded, bad) = decode(d.charset, text);
                    if bad {
                        warnings.bad_text[plan.prop] += 1;
                    }
                    &decoded[..]
                }
                _ => text,
            };
            match write_cell(out, plan.ty, prop.target, &prop.members, text) {
                Ok(Note::Ok) => {}
                Ok(Note::ZeroDate) => warnings.zero_dates[plan.prop] += 1,
                Ok(Note::Fallback) => warnings.fallbacks[plan.prop] += 1,
                Ok(Note::BadText) => warnings.bad_text[plan.prop] += 1,
                Err(problem) => {
                    return Err(ConvertError::Value {
                        column: prop.name.clone(),
                        problem,
                    })
                }
            }
        }
        cells.end().map_err(|_| self.malformed(row))?;
        for key in &self.missing {
            out.extend_from_slice(key);
            out.extend_from_slice(b"null");
        }
        for member in extra {
            out.push(b',');
            out.extend_from_slice(member);
        }
        match out.get_mut(open) {
            Some(comma) => *comma = b'{',
            None => out.push(b'{'),
        }
        out.push(b'}');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conv(
        ty: Type,
        target: Target,
        members: &[&str],
        text: &[u8],
    ) -> Result<(String, Note), String> {
        let members: Vec<String> = members.iter().map(|s| s.to_string()).collect();
        let mut out = b"[".to_vec();
        let note = write_cell(&mut out, ty, target, &members, text).map_err(|e| e.to_string())?;
        out.push(b']');
        let s = String::from_utf8(out).expect("utf8 output");
        // every output must be valid JSON; the text itself is compared exactly
        let _: Value = serde_json::from_str(&s).unwrap_or_else(|e| panic!("{s}: {e}"));
        Ok((s[1..s.len() - 1].to_string(), note))
    }

    /// (vitess type, target, members, cell text, expected JSON)
    type Case = (
        Type,
        Target,
        &'static [&'static str],
        &'static [u8],
        &'static str,
    );

    mod table {
        use super::super::{Target::*, Type as T};
        use super::Case;

        const E: &[&str] = &[];
        const SIZES: &[&str] = &["small", "medium", "large"];
        const COLORS: &[&str] = &["red", "green", "blue"];
        const NUMS: &[&str] = &["10", "20"];

        pub const CONVERSIONS: &[Case] = &[
            (T::Int8, Integer, E, b"-128", "-128"),
            (T::Int64, Integer, E, b"0", "0"),
            (T::Int64, Integer, E, b"-0", "0"),
            (T::Int64, Integer, E, b"+5", "5"),
            (T::Int32, Integer, E, b"-007", "-7"),
            (
                T::Int64,
                Integer,
                E,
                b"-9223372036854775808",
                "-9223372036854775808",
            ),
            (
                T::Uint64,
                Integer,
                E,
                b"18446744073709551615",
                "18446744073709551615",
            ),
            (
                T::Int64,
                Integer,
                E,
                b"-9223372036854775808",
                "-9223372036854775808",
            ),
            (T::Year, Integer, E, b"0000", "0"),
            (T::Year, Integer, E, b"2024", "2024"),
            (T::Int64, Number, E, b"42", "42"),
            (T::Int32, Text, E, b"42", "\"42\""),
            (T::Bit, Integer, E, b"\x0a\xaa", "2730"),
            (T::Bit, Boolean, E, b"\x01", "true"),
            (T::Bit, Boolean, E, b"\x00", "false"),
            (T::Int8, Boolean, E, b"1", "true"),
            (T::Int8, Boolean, E, b"0", "false"),
            (T::Int8, Boolean, E, b"-1", "true"),
            (T::Decimal, Number, E, b"1234567890.12", "1234567890.12"),
            (T::Decimal, Number, E, b"0.50", "0.50"),
            (T::Decimal, Number, E, b".50", "0.50"),
            (T::Decimal, Number, E, b"-.50", "-0.50"),
            (T::Decimal, Number, E, b"-12.30", "-12.30"),
            (
                T::Decimal,
                Number,
                E,
                b"-0.000000000000000000000000000001",
                "-0.000000000000000000000000000001",
            ),
            (T::Decimal, Number, E, b"0", "0"),
            (T::Decimal, Number, E, b"-0", "0"),
            (T::Decimal, Number, E, b"-0.5", "-0.5"),
            (T::Decimal, Number, E, b"00.5", "0.5"),
            (T::Decimal, Number, E, b"5.", "5"),
            (T::Decimal, Number, E, b"-5.", "-5"),
            (T::Decimal, Number, E, b"0.000", "0.000"),
            (T::Decimal, Number, E, b"-10.05", "-10.05"),
            (T::Decimal, Text, E, b"-0.00", "\"0.00\""),
            (T::Decimal, Number, E, b"-0.00", "0.00"),
            (T::Decimal, Text, E, b".50", "\"0.50\""),
            (
                T::Float64,
                Number,
                E,
                b"3.141592653589793",
                "3.141592653589793",
            ),
            (T::Float64, Number, E, b"1.5E+00", "1.5"),
            (T::Float64, Number, E, b"-2.5e-10", "-2.5e-10"),
            (T::Float32, Number, E, b"1.5", "1.5"),
            (T::Float64, Number, E, b"0", "0.0"),
            (T::Float64, Number, E, b"NaN", "null"),
            (T::Float64, Text, E, b"1.5E+00", "\"1.5\""),
            (T::Date, Date, E, b"2024-02-29", "\"2024-02-29\""),
            (
                T::Date,
                DateTime,
                E,
                b"2024-02-29",
                "\"2024-02-29T00:00:00+00:00\"",
            ),
            (
                T::Datetime,
                DateTime,
                E,
                b"2024-01-02 03:04:05",
                "\"2024-01-02T03:04:05+00:00\"",
            ),
            (
                T::Datetime,
                DateTime,
                E,
                b"2024-01-02 03:04:05.123456",
                "\"2024-01-02T03:04:05.123456+00:00\"",
            ),
            (
                T::Timestamp,
                DateTime,
                E,
                b"2024-06-01 12:00:00.250",
                "\"2024-06-01T12:00:00.250+00:00\"",
            ),
            (
                T::Datetime,
                Date,
                E,
                b"2024-01-02 03:04:05",
                "\"2024-01-02\"",
            ),
            (
                T::Datetime,
                Text,
                E,
                b"2024-01-02 03:04:05",
                "\"2024-01-02 03:04:05\"",
            ),
            (T::Time, Text, E, b"-838:59:59", "\"-838:59:59\""),
            (T::Time, Text, E, b"12:34:56.789000", "\"12:34:56.789000\""),
            (T::Varchar, Text, E, "héllo ✓".as_bytes(), "\"héllo ✓\""),
            (
                T::Varchar,
                Text,
                E,
                b"quote\" back\\ nl\n",
                "\"quote\\\" back\\\\ nl\\n\"",
            ),
            (T::Text, Text, E, b"bad \xff utf8", "\"bad \u{fffd} utf8\""),
            (T::Enum, Text, SIZES, b"medium", "\"medium\""),
            (T::Enum, Text, SIZES, b"2", "\"medium\""),
            (T::Enum, Text, SIZES, b"0", "\"\""),
            (T::Enum, Text, NUMS, b"20", "\"20\""),
            (T::Enum, Text, NUMS, b"1", "\"10\""),
            (T::Enum, Text, E, b"2", "\"2\""),
            (T::Set, Text, COLORS, b"red,blue", "\"red,blue\""),
            (T::Set, Text, COLORS, b"5", "\"red,blue\""),
            (T::Set, Text, COLORS, b"0", "\"\""),
            (T::Set, Text, COLORS, b"", "\"\""),
            (T::Binary, Base64, E, b"ab\x00\x00", "\"YWIAAA==\""),
            (T::Blob, Base64, E, b"\xde\xad\xbe\xef", "\"3q2+7w==\""),
            (T::Blob, Base64, E, b"", "\"\""),
            (T::Binary, Base16, E, b"ab\x00\x00", "\"61620000\""),
            (T::Blob, Base16, E, b"\xde\xad\xbe\xef", "\"deadbeef\""),
            (T::Geometry, Base16, E, b"\x00\xff\x10", "\"00ff10\""),
            (T::Blob, Base16, E, b"", "\"\""),
            // decimal_encoding `string` (x-singer.decimal): exact digits as text.
            (T::Decimal, Text, E, b".50", "\"0.50\""),
            (
                T::Decimal,
                Text,
                E,
                b"-0.000000000000000000000000000001",
                "\"-0.000000000000000000000000000001\"",
            ),
            (
                T::Uint64,
                Text,
                E,
                b"18446744073709551615",
                "\"18446744073709551615\"",
            ),
            (
                T::Json,
                Json,
                E,
                b"{\"a\": 1, \"b\": [true, null]}",
                "{\"a\": 1, \"b\": [true, null]}",
            ),
            (T::Json, Json, E, b"{\n\"a\": 1}", "{\"a\":1}"),
            (T::Json, Json, E, b"[]", "[]"),
            (T::Json, Json, E, b"\"s\"", "\"s\""),
            (T::Json, Text, E, b"{\"a\": 1}", "\"{\\\"a\\\": 1}\""),
            (T::Bit, Text, E, b"\x05", "\"5\""),
        ];
    }

    #[test]
    fn conversion_table() {
        let cases = table::CONVERSIONS.iter().copied();
        for (ty, target, members, text, want) in cases {
            let got = conv(ty, target, members, text);
            assert_eq!(
                got.as_ref().map(|(s, _)| s.as_str()),
                Ok(want),
                "{ty:?} {target:?} {:?}",
                String::from_utf8_lossy(text)
            );
        }
    }

    /// Every string of up to five characters of `-.0159`: where the fast
    /// path copies a decimal as it is, the rewrite gives the same text.
    #[test]
    fn canonical_decimals_are_what_the_rewrite_writes() {
        let alphabet = b"-.0159";
        let mut copied = 0;
        for len in 0..=5u32 {
            for mut n in 0..alphabet.len().pow(len) {
                let mut text = Vec::new();
                for _ in 0..len {
                    text.push(alphabet[n % alphabet.len()]);
                    n /= alphabet.len();
                }
                if canonical_decimal(&text) {
                    let mut out = Vec::new();
                    assert_eq!(rewrite_decimal(&mut out, &text), Some(()), "{text:?}");
                    assert_eq!(out, text, "{}", String::from_utf8_lossy(&text));
                    copied += 1;
                }
            }
        }
        assert!(copied > 100, "{copied}");
    }

    #[test]
    fn decimals_are_exact_text() {
        // Compare raw bytes: exactness must survive, not just the value.
        let cases: &[(&[u8], &str)] = &[
            (
                b"12345678901234567890.123456789012345678901234567890",
                "12345678901234567890.123456789012345678901234567890",
            ),
            (b".5", "0.5"),
            (b"-.5", "-0.5"),
            (b"007.10", "7.10"),
            (b"5.", "5"),
            (b"+3", "3"),
        ];
        for (text, want) in cases {
            let mut out = Vec::new();
            write_cell(&mut out, Type::Decimal, Target::Number, &[], text).expect("decimal");
            assert_eq!(String::from_utf8(out).expect("utf8"), *want);
        }
    }

    #[test]
    fn zero_and_invalid_dates_are_null_with_a_note() {
        for (ty, text) in [
            (Type::Date, &b"0000-00-00"[..]),
            (Type::Datetime, b"0000-00-00 00:00:00"),
            (Type::Datetime, b"0000-00-00 00:00:00.000000"),
            (Type::Date, b"2024-00-10"),
            (Type::Date, b"2023-02-29"),
            (Type::Timestamp, b"0000-00-00 00:00:00"),
        ] {
            for target in [Target::Date, Target::DateTime] {
                assert_eq!(
                    conv(ty, target, &[], text),
                    Ok(("null".to_string(), Note::ZeroDate)),
                    "{:?}",
                    String::from_utf8_lossy(text)
                );
            }
        }
    }

    #[test]
    fn bad_values_are_errors_not_panics() {
        let cases: Vec<(Type, Target, &[u8])> = vec![
            (Type::Int32, Target::Integer, b"12a"),
            (Type::Int32, Target::Integer, b""),
            (Type::Decimal, Target::Number, b"1.2.3"),
            (Type::Bit, Target::Integer, b"123456789"),
            (Type::Varchar, Target::Boolean, b"maybe"),
            (Type::Datetime, Target::DateTime, b"yesterday"),
            (Type::Datetime, Target::DateTime, b"2024-01-02 3:04:05"),
        ];
        for (ty, target, text) in cases {
            let mut out = b"prefix".to_vec();
            let err = write_cell(&mut out, ty, target, &[], text);
            assert!(
                err.is_err(),
                "{ty:?} {target:?} {:?}",
                String::from_utf8_lossy(text)
            );
            assert_eq!(out, b"prefix", "output untouched on error");
        }
    }

    #[test]
    fn targets_from_schema() {
        let cases = [
            (json!({"type": ["null", "integer"]}), Target::Integer),
            (json!({"type": "integer"}), Target::Integer),
            (json!({"type": ["null", "number"]}), Target::Number),
            (json!({"type": ["null", "boolean"]}), Target::Boolean),
            (json!({"type": ["null", "string"]}), Target::Text),
            (
                json!({"type": ["null", "string"], "format": "date"}),
                Target::Date,
            ),
            (
                json!({"type": ["null", "string"], "format": "date-time"}),
                Target::DateTime,
            ),
            (
                json!({"type": ["null", "string"], "contentEncoding": "base64"}),
                Target::Base64,
            ),
            (
                json!({"type": ["null", "string"], "contentEncoding": "base16"}),
                Target::Base16,
            ),
            (
                json!({"type": ["null", "string"], "format": "x-singer.decimal", "precision": 12, "scale": 2}),
                Target::Text,
            ),
            (
                json!({"type": ["null", "object", "array", "string", "number", "boolean"]}),
                Target::Json,
            ),
            (json!({"type": ["null", "object"]}), Target::Json),
            (json!({}), Target::Text),
        ];
        for (schema, want) in cases {
            assert_eq!(Target::of(&schema), want, "{schema}");
        }
    }

    fn field(name: &str, ty: Type) -> Field {
        Field {
            name: prost::bytes::Bytes::copy_from_slice(name.as_bytes()),
            r#type: ty as i32,
            ..Default::default()
        }
    }

    fn row(cells: &[Option<&[u8]>]) -> Row {
        Row::from_cells(cells.iter().copied())
    }

    #[test]
    fn enum_and_set_text_is_decoded_unless_it_came_as_utf8_members() {
        let latin1 = Charset::named("latin1");
        let utf16 = Charset::named("utf16");
        let m = |ms: &[&str]| ms.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        /// (type, charset, members, bytes, taken as they came)
        type Case<'a> = (Type, Charset, Vec<String>, &'a [u8], bool);
        let cases: &[Case] = &[
            // a change: vttablet sends the schema's member text, UTF-8
            (
                Type::Enum,
                latin1,
                m(&["café", "a"]),
                "café".as_bytes(),
                true,
            ),
            // a copy: the column's own bytes
            (Type::Enum, latin1, m(&["café", "a"]), b"caf\xe9", false),
            (Type::Enum, latin1, m(&["café", "a"]), b"a", false),
            // old forms: index and bitmask
            (Type::Enum, latin1, m(&["café", "a"]), b"2", true),
            (Type::Set, latin1, m(&["é", "x"]), b"3", true),
            (Type::Set, latin1, m(&["é", "x"]), "é,x".as_bytes(), true),
            (Type::Set, latin1, m(&["é", "x"]), b"\xe9,x", false),
            (Type::Enum, utf16, m(&["Ωμ"]), "Ωμ".as_bytes(), true),
            (Type::Enum, utf16, m(&["Ωμ"]), b"\x03\xa9\x03\xbc", false),
            // text is always decoded
            (Type::Text, latin1, m(&[]), "café".as_bytes(), false),
        ];
        for (ty, cs, members, raw, want) in cases {
            assert_eq!(
                members_as_sent(*ty, *cs, members, raw),
                *want,
                "{ty:?} {cs:?} {raw:?}"
            );
        }
    }

    #[test]
    fn text_is_decoded_by_its_columns_charset_and_bad_bytes_counted() {
        let with = |name: &str, ty: Type, charset: u32| Field {
            charset,
            ..field(name, ty)
        };
        // latin1_swedish_ci, sjis_japanese_ci, utf16_general_ci,
        // utf8mb4_general_ci, binary (a BLOB stays bytes).
        let fields = vec![
            with("l1", Type::Text, 8),
            with("sj", Type::Varchar, 13),
            with("u16", Type::Char, 54),
            with("u8", Type::Text, 45),
            with("b", Type::Blob, 63),
        ];
        let prop = |name: &str, target| PropertySpec {
            name: name.into(),
            target,
            members: vec![],
            charset: None,
        };
        let props = vec![
            prop("l1", Target::Text),
            prop("sj", Target::Text),
            prop("u16", Target::Text),
            prop("u8", Target::Text),
            prop("b", Target::Base64),
        ];
        let plan = RecordPlan::new(&fields, &props);
        let mut w = Warnings::default();
        let mut write = |cells: &[Option<&[u8]>]| {
            let mut out = Vec::new();
            plan.write_record(&mut out, &row(cells), &props, &[], &mut w)
                .expect("written");
            serde_json::from_slice::<Value>(&out).expect("json")
        };
        assert_eq!(
            write(&[
                Some(b"caf\xe9 cr\xe8me"),
                Some(b"\x93\xfa\x96{\x8c\xea"),
                Some(b"\x00c\x00\xe9"),
                Some("né".as_bytes()),
                Some(b"\xe9"),
            ]),
            json!({"l1": "café crème", "sj": "日本語", "u16": "cé", "u8": "né", "b": "6Q=="})
        );
        // Bytes not valid in their charset: U+FFFD, counted per column.
        assert_eq!(
            write(&[
                Some(b"ok"),
                Some(b"a\x81"),
                Some(b"\x00"),
                Some(b"caf\xe9"),
                None
            ]),
            json!({"l1": "ok", "sj": "a\u{fffd}", "u16": "\u{fffd}", "u8": "caf\u{fffd}", "b": null})
        );
        assert_eq!(w.bad_text, vec![0, 1, 1, 1, 0]);
    }

    #[test]
    fn records_follow_the_plan() {
        let fields = vec![
            field("id", Type::Int64),
            field("skip", Type::Varchar),
            field("d", Type::Date),
            field("amt", Type::Decimal),
            field("a_column_name_longer_than_twenty", Type::Int64),
        ];
        let props = vec![
            PropertySpec {
                name: "id".into(),
                target: Target::Integer,
                members: vec![],
                charset: None,
            },
            PropertySpec {
                name: "d".into(),
                target: Target::Date,
                members: vec![],
                charset: None,
            },
            PropertySpec {
                name: "amt".into(),
                target: Target::Number,
                members: vec![],
                charset: None,
            },
            PropertySpec {
                name: "gone".into(),
                target: Target::Text,
                members: vec![],
                charset: None,
            },
            PropertySpec {
                name: "a_column_name_longer_than_twenty".into(),
                target: Target::Integer,
                members: vec![],
                charset: None,
            },
        ];
        let plan = RecordPlan::new(&fields, &props);
        assert!(plan.matches(&fields));
        assert_eq!(plan.missing_names(), vec!["gone".to_string()]);
        let mut out = Vec::new();
        let mut w = Warnings::default();
        plan.write_record(
            &mut out,
            &row(&[
                Some(b"7"),
                Some(b"x"),
                Some(b"0000-00-00"),
                None,
                Some(b"1"),
            ]),
            &props,
            &[b"\"_sdc_deleted_at\":null"],
            &mut w,
        )
        .expect("record");
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            r#"{"id":7,"d":null,"amt":null,"a_column_name_longer_than_twenty":1,"gone":null,"_sdc_deleted_at":null}"#
        );
        assert_eq!(w.zero_dates[1], 1);

        // a delete's key-only row writes its keys and nothing else
        let keys = RecordPlan::keys_only(&fields[..1], &props);
        assert!(keys.missing_names().is_empty());
        let mut out = Vec::new();
        keys.write_record(&mut out, &row(&[Some(b"9")]), &props, &[], &mut w)
            .expect("delete record");
        assert_eq!(String::from_utf8(out).expect("utf8"), r#"{"id":9}"#);
    }

    #[test]
    fn plain_floats_are_written_as_they_are_and_others_reformatted() {
        let cases: &[(&[u8], bool, &str)] = &[
            (b"0.14285714285714285", true, "0.14285714285714285"),
            (b"-2.5", true, "-2.5"),
            (b"1234567890123456.5", true, "1234567890123456.5"),
            (b"0.00001", true, "0.00001"),
            (b" 1.5 ", true, "1.5"),
            // an exponent, a trailing zero, no dot, a leading zero, too
            // many digits, too small or too large for plain notation
            (b"1.5E+00", false, "1.5"),
            (b"1.50", false, "1.5"),
            (b"100", false, "100.0"),
            (b"01.5", false, "1.5"),
            (b"0.1000000000000000055511", false, "0.1"),
            (b"0.000001", false, "1e-6"),
            (b"12345678901234567.5", false, "1.2345678901234568e+16"),
            (b"-0.0", false, "-0.0"),
            (b".5", false, "0.5"),
            // whole numbers: written with `.0` up to 15 digits
            (b"7", false, "7.0"),
            (b"-0", false, "-0.0"),
            (b"123456789012345", false, "123456789012345.0"),
            (b"12345678901234567", false, "1.2345678901234568e+16"),
            (b"0042", false, "42.0"),
        ];
        for (text, plain, want) in cases {
            assert_eq!(plain_float(text.trim_ascii()), *plain, "{text:?}");
            let mut out = Vec::new();
            write_float(&mut out, text).expect("a float");
            assert_eq!(String::from_utf8(out).expect("utf8"), *want, "{text:?}");
        }
    }

    /// MySQL prints a double in its shortest digits, as Rust's `Display`
    /// does (always without an exponent, and a whole number without a
    /// point). Whatever the fast paths write for such a text names the
    /// double that parsing and writing it again would, and up to 15
    /// significant digits it is the same bytes. (At 16 or 17 digits
    /// several texts can be shortest; writers may pick another last
    /// digit, for the same double.)
    #[test]
    fn fast_floats_are_what_reformatting_would_write() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut taken = 0;
        for i in 0..250_000 {
            let v = match i % 5 {
                // any finite double
                0 => f64::from_bits(next()),
                // ones of every magnitude around the plain range's edges
                1 => (next() >> 11) as f64 / (1u64 << 53) as f64 * 10f64.powi(i % 40 - 20),
                // short decimals, as prices are
                2 => (next() % 1_000_000) as f64 / 100.0,
                3 => (next() % 1000) as f64 / 7.0,
                // whole numbers of every length, either sign
                _ => {
                    (next() % 10u64.pow((i % 19) as u32 + 1)) as f64
                        * if i % 2 == 0 { 1.0 } else { -1.0 }
                }
            };
            if !v.is_finite() {
                continue;
            }
            let text = format!("{v}");
            if !plain_float(text.as_bytes()) && !plain_integer(text.as_bytes()) {
                continue;
            }
            taken += 1;
            let write = |f: fn(&mut Vec<u8>, &[u8]) -> Option<()>| {
                let mut out = Vec::new();
                f(&mut out, text.as_bytes()).expect("a float");
                String::from_utf8(out).expect("utf8")
            };
            let (fast, slow) = (write(write_float), write(reformat_float));
            let parsed = |t: &str| t.parse::<f64>().expect("parses");
            assert_eq!(parsed(&fast).to_bits(), v.to_bits(), "{text} {fast}");
            assert_eq!(parsed(&slow).to_bits(), v.to_bits(), "{text} {slow}");
            let digits = text.bytes().filter(u8::is_ascii_digit).count();
            let leading = text
                .trim_start_matches('-')
                .bytes()
                .take_while(|b| *b == b'0' || *b == b'.')
                .filter(|b| *b == b'0')
                .count();
            if digits - leading <= 15 {
                assert_eq!(fast, slow, "{v:e}");
            }
        }
        assert!(taken > 150_000, "{taken} of the texts took a fast path");
    }

    #[test]
    fn malformed_rows_are_errors() {
        let fields = vec![field("a", Type::Varchar), field("b", Type::Varchar)];
        let props = vec![PropertySpec {
            name: "a".into(),
            target: Target::Text,
            members: vec![],
            charset: None,
        }];
        let plan = RecordPlan::new(&fields, &props);
        let bad = [
            Row::new(&[1], prost::bytes::Bytes::from_static(b"x")),
            Row::new(&[5, 1], prost::bytes::Bytes::from_static(b"abc")),
            Row::new(&[1, 1], prost::bytes::Bytes::from_static(b"abcdef")),
            Row::new(&[i64::MAX, 1], prost::bytes::Bytes::from_static(b"ab")),
        ];
        for r in bad {
            let mut out = b"keep".to_vec();
            let err = plan.write_record(&mut out, &r, &props, &[], &mut Warnings::default());
            assert!(
                matches!(err, Err(ConvertError::Malformed(_))),
                "{r:?}: {err:?}"
            );
            assert_eq!(out, b"keep");
        }
    }
}
