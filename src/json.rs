//! JSON literals written straight into byte buffers: strings and integers.
//!
//! Every RECORD cell of text passes through [`write_text`], so this is the
//! copy's inner loop. Most database text is printable ASCII with nothing to
//! escape, so the scan looks at eight bytes at once (plain `u64`
//! arithmetic, no `unsafe`, no target features) and copies each clean run
//! with one `extend_from_slice`. The UTF-8 check is folded into the same
//! scan: a run of ASCII is valid UTF-8 by construction, so the validator
//! only ever sees the tail that starts at the first non-ASCII byte.
//!
//! The output is byte for byte what `serde_json` writes for the same
//! string (`\"`, `\\`, `\b \f \n \r \t`, other control characters as
//! `\u00XX` with lowercase hex, everything else as is), so records do not
//! change with the writer; the tests hold both side by side.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// Whether any byte of `w` is zero. Exact as a yes/no answer: the borrow
/// that can set a high bit above a zero byte needs a zero byte below it.
const fn has_zero(w: u64) -> bool {
    w.wrapping_sub(ONES) & !w & HIGH != 0
}

/// Whether any byte of `w` is below 0x20 (same argument as [`has_zero`],
/// valid for any bound up to 0x80).
const fn has_control(w: u64) -> bool {
    w.wrapping_sub(0x20 * ONES) & !w & HIGH != 0
}

/// Whether any byte of `w` needs escaping: a control character, `"` or `\`.
const fn has_special(w: u64) -> bool {
    has_control(w) || has_zero(w ^ (b'"' as u64 * ONES)) || has_zero(w ^ (b'\\' as u64 * ONES))
}

/// How a byte is written inside a JSON string: 0 as is, `u` as `\u00XX`,
/// anything else as that letter after a backslash.
static ESCAPE: [u8; 256] = {
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
    t
};

/// Length of the leading run of bytes that go out as they are. With
/// `ascii`, the run also stops at the first byte of 0x80 or above.
fn clean_prefix(bytes: &[u8], ascii: bool) -> usize {
    let mut n = 0;
    // Long runs first, 32 bytes a step: written as a plain fold over a
    // fixed-size block, which the compiler turns into vector compares (SSE2
    // is part of x86-64), with no `unsafe` and no intrinsics here.
    let high = if ascii { 0x80 } else { 0 };
    for block in bytes.chunks_exact(32) {
        let mut care = 0u8;
        for &b in block {
            care |= u8::from((b < 0x20) | (b == b'"') | (b == b'\\')) | (b & high);
        }
        if care != 0 {
            break;
        }
        n += 32;
    }
    for chunk in bytes[n..].chunks_exact(8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        if has_special(w) || (ascii && w & HIGH != 0) {
            break;
        }
        n += 8;
    }
    n + bytes[n..]
        .iter()
        .take_while(|&&b| goes_as_is(b, ascii))
        .count()
}

/// Whether a byte goes out as it is: nothing to escape, and with `ascii`
/// below 0x80.
fn goes_as_is(b: u8, ascii: bool) -> bool {
    ESCAPE[usize::from(b)] == 0 && !(ascii && b >= 0x80)
}

/// Appends the escaped body of a string (no quotes) that is valid UTF-8.
fn escape_body(out: &mut Vec<u8>, bytes: &[u8]) {
    escape_runs(out, bytes, false);
}

/// Appends `bytes` escaped, run by run, up to the end or (with `ascii`) to
/// the first byte of 0x80 or above, and returns what is left from there.
/// Short runs between escapes (JSON text is full of quotes) are copied
/// byte by byte: a scan per run would cost more than the run.
fn escape_runs<'a>(out: &mut Vec<u8>, mut bytes: &'a [u8], ascii: bool) -> &'a [u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    loop {
        let run = if bytes.len() >= 16 {
            clean_prefix(bytes, ascii)
        } else {
            bytes.iter().take_while(|&&b| goes_as_is(b, ascii)).count()
        };
        out.extend_from_slice(&bytes[..run]);
        bytes = &bytes[run..];
        let Some(&b) = bytes.first() else {
            return bytes;
        };
        match ESCAPE[usize::from(b)] {
            0 => return bytes,
            b'u' => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0x0f)],
            ]),
            letter => out.extend_from_slice(&[b'\\', letter]),
        }
        bytes = &bytes[1..];
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
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    // ASCII needs no UTF-8 check; the rest is checked once, from its
    // first non-ASCII byte.
    let tail = escape_runs(out, bytes, true);
    if !tail.is_empty() {
        match std::str::from_utf8(tail) {
            Ok(s) => escape_body(out, s.as_bytes()),
            Err(_) => escape_body(out, String::from_utf8_lossy(tail).as_bytes()),
        }
    }
    out.push(b'"');
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
    /// in the word tests (a missed lane, a wrong bound) shows.
    #[test]
    fn every_byte_in_every_lane() {
        for b in 0u8..=0x7f {
            for lane in 0..16 {
                let mut s = vec![b'x'; 19];
                s[lane] = b;
                let s = String::from_utf8(s).expect("ascii");
                assert_eq!(text(s.as_bytes()), reference(&s), "byte {b:#x} at {lane}");
            }
        }
        for lane in 0..16 {
            let mut s = "x".repeat(19);
            s.replace_range(lane..lane + 1, "é");
            assert_eq!(text(s.as_bytes()), reference(&s), "é at {lane}");
        }
    }

    #[test]
    fn word_tests_agree_with_bytewise_tests() {
        let samples: &[[u8; 8]] = &[
            *b"abcdefgh",
            *b"abc\"efgh",
            *b"\\bcdefgh",
            *b"abcdefg\x1f",
            *b"\x20\x20\x20\x20\x20\x20\x20\x20",
            *b"\x21\x22\x5b\x5c\x5d\x00\x7f\x80",
            [0xff; 8],
            [0x80, 0x01, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80],
            [0xa2, 0xdc, 0x23, 0x5d, 0x20, 0x7e, 0xe2, 0x9c],
        ];
        for w in samples {
            let want = w.iter().any(|b| *b < 0x20 || *b == b'"' || *b == b'\\');
            assert_eq!(has_special(u64::from_le_bytes(*w)), want, "{w:?}");
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
