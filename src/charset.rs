//! Text in its column's own character set, decoded to UTF-8.
//!
//! vttablet sends a text column's bytes as MySQL stores them, in the
//! column's character set, and names the collation in `Field.charset`.
//! UTF-8 columns (`utf8mb3`, `utf8mb4`) and ASCII ones are written as they
//! are (the fast path); the others are decoded here with `encoding_rs`.
//! A value that is not valid in its charset is written with U+FFFD where
//! the bad bytes were and counted, per column, in the run's warnings.

use std::borrow::Cow;

use encoding_rs::Encoding;

/// How a column's bytes become UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// UTF-8 already (or ASCII, or an unknown id): written as it is.
    Utf8,
    /// `binary`: bytes, not text.
    Binary,
    /// Decoded by an `encoding_rs` encoding.
    Decode(&'static Encoding),
    /// UTF-32 big-endian (`encoding_rs` has no UTF-32).
    Utf32,
    /// A charset with no decoder here: written as it is, counted.
    Unsupported,
}

impl Charset {
    /// The charset of a collation id (`Field.charset`). Unknown ids are
    /// taken as UTF-8, as the tap did before it read charsets.
    pub fn of_collation(id: u32) -> Charset {
        crate::collations::charset_of(id).map_or(Charset::Utf8, Charset::named)
    }

    /// The charset of a field: its collation id's, or, when the server
    /// sent none it knows (0, or an id not in the table), `fallback`, the
    /// column's charset from information_schema.
    pub fn of_field(id: u32, fallback: Option<Charset>) -> Charset {
        match crate::collations::charset_of(id) {
            Some(name) => Charset::named(name),
            None => fallback.unwrap_or(Charset::Utf8),
        }
    }

    /// The charset of a MySQL/MariaDB character set name.
    pub fn named(name: &str) -> Charset {
        use encoding_rs::*;
        let enc = match name {
            "utf8mb4" | "utf8mb3" | "utf8" | "ascii" => return Charset::Utf8,
            "binary" => return Charset::Binary,
            "utf32" => return Charset::Utf32,
            // MySQL's latin1 is cp1252, with 0x81, 0x8D, 0x8F, 0x90 and
            // 0x9D as the C1 controls of the same number, as WHATWG's.
            "latin1" => WINDOWS_1252,
            "latin2" => ISO_8859_2,
            "cp1250" => WINDOWS_1250,
            "cp1251" => WINDOWS_1251,
            "cp1256" => WINDOWS_1256,
            "cp1257" => WINDOWS_1257,
            "greek" => ISO_8859_7,
            "hebrew" => ISO_8859_8,
            "latin5" => WINDOWS_1254,
            "latin7" => ISO_8859_13,
            "koi8r" => KOI8_R,
            "koi8u" => KOI8_U,
            "cp866" => IBM866,
            "macroman" => MACINTOSH,
            "tis620" => WINDOWS_874,
            "sjis" | "cp932" => SHIFT_JIS,
            "ujis" | "eucjpms" => EUC_JP,
            "gbk" | "gb2312" => GBK,
            "gb18030" => GB18030,
            "big5" => BIG5,
            "euckr" => EUC_KR,
            "ucs2" | "utf16" => UTF_16BE,
            "utf16le" => UTF_16LE,
            _ => return Charset::Unsupported,
        };
        Charset::Decode(enc)
    }

    /// Whether values need [`decode`] before they are written as text.
    #[inline]
    pub fn decodes(self) -> bool {
        matches!(
            self,
            Charset::Decode(_) | Charset::Utf32 | Charset::Unsupported
        )
    }
}

/// A value's bytes in `charset`, as UTF-8, and whether any of them were
/// not valid in it (those are U+FFFD in the text). Pure; table-tested.
pub fn decode(charset: Charset, bytes: &[u8]) -> (Cow<'_, [u8]>, bool) {
    match charset {
        Charset::Utf8 | Charset::Binary => match String::from_utf8_lossy(bytes) {
            Cow::Borrowed(_) => (Cow::Borrowed(bytes), false),
            Cow::Owned(text) => (Cow::Owned(text.into_bytes()), true),
        },
        Charset::Decode(enc) => {
            let (text, bad) = enc.decode_without_bom_handling(bytes);
            (cow_bytes(text), bad)
        }
        Charset::Utf32 => {
            let mut out = String::with_capacity(bytes.len());
            let mut bad = !bytes.len().is_multiple_of(4);
            for unit in bytes.chunks_exact(4) {
                let cp = u32::from_be_bytes([unit[0], unit[1], unit[2], unit[3]]);
                match char::from_u32(cp) {
                    Some(c) => out.push(c),
                    None => {
                        bad = true;
                        out.push(char::REPLACEMENT_CHARACTER);
                    }
                }
            }
            if !bytes.len().is_multiple_of(4) {
                out.push(char::REPLACEMENT_CHARACTER);
            }
            (Cow::Owned(out.into_bytes()), bad)
        }
        Charset::Unsupported => {
            if bytes.is_ascii() {
                (Cow::Borrowed(bytes), false)
            } else {
                let text = String::from_utf8_lossy(bytes).into_owned();
                (Cow::Owned(text.into_bytes()), true)
            }
        }
    }
}

fn cow_bytes(text: Cow<'_, str>) -> Cow<'_, [u8]> {
    match text {
        Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
        Cow::Owned(s) => Cow::Owned(s.into_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (charset name, bytes as MariaDB stores them, the text)
    const CASES: &[(&str, &[u8], &str)] = &[
        ("latin1", b"caf\xe9 cr\xe8me", "café crème"),
        // cp1252's 0x80 and 0x9F; 0x81 is the C1 control, as in MySQL.
        ("latin1", b"\x80 \x9f \x81", "€ Ÿ \u{81}"),
        ("latin2", b"\xbf\xf3\xb3w", "żółw"),
        ("cp1250", b"\xbf\xf3\xb3w \x8a", "żółw Š"),
        ("cp1251", b"\xcf\xf0\xe8\xe2\xe5\xf2", "Привет"),
        ("greek", b"\xc1\xe8\xde\xed\xe1", "Αθήνα"),
        ("hebrew", b"\xf9\xec\xe5\xed", "שלום"),
        ("ascii", b"plain", "plain"),
        ("sjis", b"\x93\xfa\x96{\x8c\xea", "日本語"),
        ("gbk", b"\xd6\xd0\xce\xc4", "中文"),
        ("big5", b"\xa4\xa4\xa4\xe5", "中文"),
        ("euckr", b"\xc7\xd1\xb1\xb9\xbe\xee", "한국어"),
        ("ujis", b"\xc6\xfc\xcb\xdc\xb8\xec", "日本語"),
        ("ucs2", b"\x00c\x00\xe9", "cé"),
        ("utf16", b"\xd8\x3d\xde\x00\x00a", "😀a"),
        ("utf16le", b"\x3d\xd8\x00\xdea\x00", "😀a"),
        ("utf32", b"\x00\x01\xf6\x00\x00\x00\x00a", "😀a"),
        ("utf8mb3", "né".as_bytes(), "né"),
        ("utf8mb4", "😀".as_bytes(), "😀"),
        ("latin1", b"", ""),
        ("utf32", b"", ""),
    ];

    #[test]
    fn every_charset_decodes_to_its_text() {
        for (name, bytes, want) in CASES {
            let (text, bad) = decode(Charset::named(name), bytes);
            assert!(!bad, "{name} {bytes:?} counted as invalid");
            assert_eq!(
                std::str::from_utf8(&text).expect("utf8"),
                *want,
                "{name} {bytes:?}"
            );
        }
    }

    /// (charset name, bytes not valid in it, the text written)
    const INVALID: &[(&str, &[u8], &str)] = &[
        ("utf8mb4", b"caf\xe9", "caf\u{fffd}"),
        ("sjis", b"a\x81", "a\u{fffd}"),
        ("utf16", b"\xd8\x3d", "\u{fffd}"),
        ("utf16", b"\x00a\x00", "a\u{fffd}"),
        ("utf32", b"\x00\x11\x00\x00", "\u{fffd}"),
        ("utf32", b"\x00\x00\x00a\x00", "a\u{fffd}"),
        ("euckr", b"\xc7", "\u{fffd}"),
        ("dec8", b"\xe9", "\u{fffd}"),
    ];

    #[test]
    fn invalid_bytes_are_replaced_and_told() {
        for (name, bytes, want) in INVALID {
            let (text, bad) = decode(Charset::named(name), bytes);
            assert!(bad, "{name} {bytes:?} not counted");
            assert_eq!(std::str::from_utf8(&text).expect("utf8"), *want, "{name}");
        }
    }

    #[test]
    fn utf8_and_binary_stay_on_the_fast_path() {
        for id in [33, 45, 46, 83, 192, 224, 255, 305, 11, 0, 99_999] {
            assert_eq!(Charset::of_collation(id), Charset::Utf8, "{id}");
            assert!(!Charset::of_collation(id).decodes());
        }
        assert_eq!(Charset::of_collation(63), Charset::Binary);
        assert!(!Charset::Binary.decodes());
        // latin1_swedish_ci, cp1251_general_ci, sjis, utf16, utf32, ucs2
        for id in [8, 51, 13, 54, 60, 35, 56, 1, 28, 19, 12, 9, 26, 25, 16] {
            assert!(Charset::of_collation(id).decodes(), "{id}");
        }
    }
}
