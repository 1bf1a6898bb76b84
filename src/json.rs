//! JSON literals written straight into byte buffers: strings and integers.
//!
//! Every RECORD cell of text passes through [`write_text`], so this is the
//! copy's inner loop. Most database text is printable ASCII with nothing to
//! escape, so the scan looks at 32 bytes at once (a fold the compiler
//! vectorizes: no `unsafe`, no target features) and copies each clean run
//! with one `extend_from_slice`; text dense with quotes (JSON in a text
//! column) is copied byte by byte after an escape. The UTF-8 check is folded into the same
//! scan: a run of ASCII is valid UTF-8 by construction, so the validator
//! only ever sees the tail that starts at the first non-ASCII byte.
//!
//! The output is byte for byte what `serde_json` writes for the same
//! string (`\"`, `\\`, `\b \f \n \r \t`, other control characters as
//! `\u00XX` with lowercase hex, everything else as is), so records do not
//! change with the writer; the tests hold both side by side.

/// How a byte is written inside a JSON string: 0 as is, `u` as `\u00XX`,
/// [`STOP`] not here (see [`ESCAPE_ASCII`]), anything else as that letter
/// after a backslash.
static ESCAPE: [u8; 256] = escape_table(false);

/// [`ESCAPE`] for the ASCII pass of [`write_text`], which stops at the
/// first byte of 0x80 or above so that only the rest is checked as UTF-8.
static ESCAPE_ASCII: [u8; 256] = escape_table(true);

/// The mark in an escape table for a byte that ends the pass.
const STOP: u8 = 1;

const fn escape_table(ascii: bool) -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = b'u';
        b += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    if ascii {
        let mut b = 0x80;
        while b < 0x100 {
            t[b] = STOP;
            b += 1;
        }
    }
    t
}

/// Length of the leading run of bytes that go out as they are under
/// `table`.
///
/// Scans 32 bytes a step: [`dirty`] is a plain fold over a fixed-size
/// block, which the compiler turns into vector compares (SSE2 is part of
/// x86-64), with no `unsafe` and no intrinsics here. Only a block that
/// holds a byte to escape is looked at byte by byte. The last partial block
/// is covered by blocks that end at the string's end and overlap what was
/// scanned already (those bytes are clean, so the first hit is still the
/// first): a partial block copied into a padded one cost a stalled load
/// (the copy's narrow stores cannot forward to the scan's wide loads),
/// about a fifth of all the time spent escaping.
fn clean_prefix(bytes: &[u8], table: &[u8; 256]) -> usize {
    let high: u8 = if table[0x80] == STOP { 0x80 } else { 0 };
    let first = |from: usize| {
        bytes[from..]
            .iter()
            .position(|b| table[usize::from(*b)] != 0)
            .map_or(bytes.len(), |i| from + i)
    };
    let mut blocks = bytes.chunks_exact(BLOCK);
    let mut n = 0;
    for block in blocks.by_ref() {
        if dirty::<BLOCK>(block, high) {
            return first(n);
        }
        n += BLOCK;
    }
    let len = bytes.len();
    if n == len {
        return len;
    }
    // The rest, under BLOCK bytes, by the widest windows that fit.
    let clean = if len >= BLOCK {
        !dirty::<BLOCK>(&bytes[len - BLOCK..], high)
    } else if len >= 16 {
        !dirty::<16>(&bytes[..16], high) && !dirty::<16>(&bytes[len - 16..], high)
    } else if len >= 8 {
        !dirty::<8>(&bytes[..8], high) && !dirty::<8>(&bytes[len - 8..], high)
    } else {
        false
    };
    if clean {
        len
    } else {
        first(n)
    }
}

const BLOCK: usize = 32;

/// Whether any of the first `N` bytes of `block` (which holds at least
/// that many) needs escaping (a control character, `"` or `\\`) or, with
/// `high` = 0x80, is not ASCII.
fn dirty<const N: usize>(block: &[u8], high: u8) -> bool {
    let Some(block) = block.first_chunk::<N>() else {
        return true;
    };
    let mut care = 0u8;
    for &b in block {
        care |= u8::from((b < 0x20) | (b == b'"') | (b == b'\\')) | (b & high);
    }
    care != 0
}

/// Appends the escaped body of a string (no quotes) that is valid UTF-8.
fn escape_body(out: &mut Vec<u8>, bytes: &[u8]) {
    escape_runs(out, bytes, &ESCAPE);
}

/// Clean bytes in a row after which the byte-by-byte loop hands back to
/// the block scan.
const DENSE: u32 = 16;

/// Appends `bytes` escaped up to the end or to the first byte `table`
/// stops at, and returns what is left from there. Clean runs go through
/// the block scan; after an escape the bytes are copied one by one until
/// [`DENSE`] clean ones in a row, since JSON text is full of quotes and a
/// scan and a copy per short run cost more than the run.
fn escape_runs<'a>(out: &mut Vec<u8>, mut bytes: &'a [u8], table: &[u8; 256]) -> &'a [u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    loop {
        let run = clean_prefix(bytes, table);
        out.extend_from_slice(&bytes[..run]);
        bytes = &bytes[run..];
        let mut clean = 0;
        while clean < DENSE {
            let Some((&b, rest)) = bytes.split_first() else {
                return bytes;
            };
            match table[usize::from(b)] {
                0 => {
                    out.push(b);
                    clean += 1;
                }
                STOP => return bytes,
                b'u' => {
                    out.extend_from_slice(&[
                        b'\\',
                        b'u',
                        b'0',
                        b'0',
                        HEX[usize::from(b >> 4)],
                        HEX[usize::from(b & 0x0f)],
                    ]);
                    clean = 0;
                }
                letter => {
                    out.push(b'\\');
                    out.push(letter);
                    clean = 0;
                }
            }
            bytes = rest;
        }
    }
}

/// Writes `s` as a JSON string literal.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    escape_body(out, s.as_bytes());
    out.push(b'"');
}

/// Writes database text as a JSON string literal: valid UTF-8 as it is,
/// anything else with U+FFFD for each invalid sequence (as
/// `String::from_utf8_lossy`).
pub fn write_text(out: &mut Vec<u8>, bytes: &[u8]) {
    write_text_checked(out, bytes);
}

/// [`write_text`], telling whether the bytes were valid UTF-8 (when not,
/// the bad ones were written as U+FFFD).
#[inline]
pub fn write_text_checked(out: &mut Vec<u8>, bytes: &[u8]) -> bool {
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    // ASCII needs no UTF-8 check; the rest is checked once, from its
    // first non-ASCII byte.
    let tail = escape_runs(out, bytes, &ESCAPE_ASCII);
    let mut valid = true;
    if !tail.is_empty() {
        match std::str::from_utf8(tail) {
            Ok(s) => escape_body(out, s.as_bytes()),
            Err(_) => {
                valid = false;
                escape_body(out, String::from_utf8_lossy(tail).as_bytes())
            }
        }
    }
    out.push(b'"');
    valid
}

/// Writes an integer in decimal.
pub fn write_int<I: itoa::Integer>(out: &mut Vec<u8>, v: I) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(s: &str) -> Vec<u8> {
        serde_json::to_vec(s).expect("a string serializes")
    }

    fn text(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_text(&mut out, bytes);
        out
    }

    #[test]
    fn strings_match_serde_json_byte_for_byte() {
        let cases = [
            "",
            "a",
            "plain ascii text that runs past several words",
            "quote \" inside",
            "back\\slash",
            "\"\\\"\\",
            "tab\there\nnew line\r\u{8}\u{c}",
            "\u{0}\u{1}\u{1f}\u{7f} edges",
            "12345678\"",
            "1234567\"8",
            "\"12345678",
            "héllo wörld, ascii after: abcdefghijklmnop",
            "日本語のテキスト\n改行",
            "emoji 🦀 and \u{2028} line separator",
            "ascii run of exactly 8",
            "0123456789abcdef0123456789abcdef\u{1}",
        ];
        for s in cases {
            let mut out = Vec::new();
            write_json_str(&mut out, s);
            assert_eq!(out, reference(s), "write_json_str({s:?})");
            assert_eq!(text(s.as_bytes()), reference(s), "write_text({s:?})");
        }
    }

    /// Every byte value at every position of an 8-byte word, so a mistake
    /// in the block scan (a missed lane, a wrong bound, the padded tail) shows.
    #[test]
    fn every_byte_in_every_lane() {
        for b in 0u8..=0x7f {
            for lane in 0..45 {
                let mut s = vec![b'x'; 45];
                s[lane] = b;
                let s = String::from_utf8(s).expect("ascii");
                assert_eq!(text(s.as_bytes()), reference(&s), "byte {b:#x} at {lane}");
            }
        }
        for lane in 0..45 {
            let mut s = "x".repeat(45);
            s.replace_range(lane..lane + 1, "é");
            assert_eq!(text(s.as_bytes()), reference(&s), "é at {lane}");
        }
    }

    /// Every length up to past two blocks, with one byte to escape (or a
    /// non-ASCII one) at every position, so each window that covers the
    /// end of a string (32, 16 and 8 bytes, and the bytes under 8) is seen
    /// to find it.
    #[test]
    fn every_length_with_a_hit_at_every_position() {
        for len in 0..=70 {
            assert_eq!(
                text(&vec![b'x'; len]),
                reference(&"x".repeat(len)),
                "clean, {len}"
            );
            for at in 0..len {
                for hit in ["\"", "\n", "é"] {
                    let mut s = "x".repeat(len);
                    s.replace_range(at..at + 1, hit);
                    assert_eq!(
                        text(s.as_bytes()),
                        reference(&s),
                        "{hit:?} at {at} of {len}"
                    );
                }
            }
        }
    }

    #[test]
    fn block_tests_agree_with_bytewise_tests() {
        for b in 0u8..=0xff {
            for lane in [0, 1, 7, 8, 15, 16, 30, 31] {
                let mut block = [b'x'; BLOCK];
                block[lane] = b;
                let special = b < 0x20 || b == b'"' || b == b'\\';
                assert_eq!(dirty::<BLOCK>(&block, 0), special, "{b:#x} at {lane}");
                assert_eq!(
                    dirty::<BLOCK>(&block, 0x80),
                    special || b >= 0x80,
                    "{b:#x} at {lane}, ascii"
                );
            }
        }
    }

    /// Strings of clean runs of every length between escapes, so each
    /// hand-over between the block scan and the byte-by-byte loop (after
    /// an escape, at [`DENSE`] clean bytes, at non-ASCII) is crossed.
    #[test]
    fn mixed_runs_match_serde_json() {
        let pieces = [
            "\"",
            "\\",
            "\n",
            "\u{1}",
            "é",
            "🦀",
            "a",
            "bcdefghijklmnopq",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let mut s = String::new();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 24) as usize;
            let mut r = seed;
            for _ in 0..len {
                r = r
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let piece = pieces[(r >> 61) as usize];
                let repeat = 1 + (r >> 40) as usize % 20;
                for _ in 0..repeat {
                    s.push_str(piece);
                }
            }
            let mut out = Vec::new();
            write_json_str(&mut out, &s);
            assert_eq!(out, reference(&s), "write_json_str({s:?})");
            assert_eq!(text(s.as_bytes()), reference(&s), "write_text({s:?})");
        }
    }

    #[test]
    fn invalid_utf8_is_replaced_as_lossy_does() {
        let cases: &[&[u8]] = &[
            b"\xff",
            b"abc\xffdef",
            b"abcdefghij\xc3",
            b"\xc3\x28 and \"quote\"",
            b"ok \xe2\x82 cut \xf0\x9f\xa6\x80 crab",
        ];
        for bytes in cases {
            let want = reference(&String::from_utf8_lossy(bytes));
            assert_eq!(text(bytes), want, "{bytes:?}");
        }
    }

    #[test]
    fn integers() {
        let mut out = Vec::new();
        write_int(&mut out, 0u64);
        out.push(b' ');
        write_int(&mut out, i64::MIN);
        out.push(b' ');
        write_int(&mut out, u64::MAX);
        assert_eq!(out, b"0 -9223372036854775808 18446744073709551615");
    }
}
