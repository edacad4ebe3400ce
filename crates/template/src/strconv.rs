//! The parts of Go's `strconv` and `fmt` the template grammar relies on: quoting for error
//! texts (`%q`, `%#U`), unquoting string and character literals, and Go's number syntax
//! (`ParseUint`/`ParseInt` with base 0, `ParseFloat`).

/// Go's `strconv.IsPrint`, close enough for error texts: ASCII graphic characters and space,
/// and non-ASCII characters that are not controls, spaces, format characters or private use.
pub(crate) fn is_print(c: char) -> bool {
    if c.is_ascii() {
        return (' '..='~').contains(&c);
    }
    let u = c as u32;
    let format = matches!(
        u,
        0xAD | 0x600..=0x605
            | 0x61C
            | 0x6DD
            | 0x70F
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0xE000..=0xF8FF
            | 0xFFFE..=0xFFFF
            | 0xF0000..
    );
    !(c.is_control() || c.is_whitespace() || format)
}

/// Go's `strconv.Quote`.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if is_print(c) => out.push(c),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// Go's `%#U`: `U+0041 'A'` (the character only when printable).
pub(crate) fn unicode_name(c: char) -> String {
    if is_print(c) {
        format!("U+{:04X} '{c}'", c as u32)
    } else {
        format!("U+{:04X}", c as u32)
    }
}

/// Go's `strconv.UnquoteChar`: one (possibly escaped) character of a literal quoted with
/// `quote`. Returns the bytes it stands for and the rest. `\x` and octal escapes are single
/// bytes, possibly not UTF-8.
pub(crate) fn unquote_char(s: &str, quote: u8) -> Option<(Vec<u8>, u32, &str)> {
    let b = s.as_bytes();
    let first = *b.first()?;
    if first == quote && (quote == b'\'' || quote == b'"') {
        return None;
    }
    if first >= 0x80 {
        let c = s.chars().next()?;
        let mut buf = [0u8; 4];
        return Some((
            c.encode_utf8(&mut buf).as_bytes().to_vec(),
            c as u32,
            &s[c.len_utf8()..],
        ));
    }
    if first != b'\\' {
        return Some((vec![first], first as u32, &s[1..]));
    }
    let c = *b.get(1)?;
    // A non-ASCII character after the backslash is no escape (and s[2..] would split it).
    let rest = s.get(2..)?;
    let simple = |v: u8| Some((vec![v], v as u32, rest));
    match c {
        b'a' => simple(7),
        b'b' => simple(8),
        b'f' => simple(12),
        b'n' => simple(b'\n'),
        b'r' => simple(b'\r'),
        b't' => simple(b'\t'),
        b'v' => simple(11),
        b'\\' => simple(b'\\'),
        b'\'' | b'"' if c == quote => simple(c),
        b'x' | b'u' | b'U' => {
            let n = match c {
                b'x' => 2,
                b'u' => 4,
                _ => 8,
            };
            let digits = rest.get(..n)?;
            let v = u32::from_str_radix(digits, 16).ok()?;
            if !digits.bytes().all(|d| d.is_ascii_hexdigit()) {
                return None;
            }
            let rest = &rest[n..];
            if c == b'x' {
                return Some((vec![v as u8], v, rest));
            }
            let ch = char::from_u32(v)?;
            let mut buf = [0u8; 4];
            Some((ch.encode_utf8(&mut buf).as_bytes().to_vec(), v, rest))
        }
        b'0'..=b'7' => {
            let digits = rest.get(..2)?;
            let mut v = (c - b'0') as u32;
            for d in digits.bytes() {
                if !(b'0'..=b'7').contains(&d) {
                    return None;
                }
                v = v << 3 | (d - b'0') as u32;
            }
            if v > 255 {
                return None;
            }
            Some((vec![v as u8], v, &rest[2..]))
        }
        _ => None,
    }
}

/// Go's `strconv.Unquote` for the literals the lexer produces: the bytes of a `"…"` or
/// `` `…` `` string, or `None` ("invalid syntax").
pub(crate) fn unquote(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if b.len() < 2 || b[0] != b[b.len() - 1] {
        return None;
    }
    let quote = b[0];
    let inner = &s[1..s.len() - 1];
    match quote {
        b'`' => {
            if inner.contains('`') {
                return None;
            }
            Some(inner.bytes().filter(|c| *c != b'\r').collect())
        }
        b'"' => {
            if inner.contains('\n') {
                return None;
            }
            let mut out = Vec::with_capacity(inner.len());
            let mut rest = inner;
            while !rest.is_empty() {
                let (bytes, _, tail) = unquote_char(rest, quote)?;
                out.extend(bytes);
                rest = tail;
            }
            Some(out)
        }
        _ => None,
    }
}

/// Go's `underscoreOK`: underscores only between digits, or after a base prefix.
fn underscore_ok(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let b = s.as_bytes();
    let mut saw = b'^';
    let mut i = 0;
    let mut hex = false;
    if b.len() >= 2 && b[0] == b'0' && matches!(b[1].to_ascii_lowercase(), b'b' | b'o' | b'x') {
        i = 2;
        saw = b'0';
        hex = b[1].eq_ignore_ascii_case(&b'x');
    }
    while i < b.len() {
        let c = b[i];
        i += 1;
        if c.is_ascii_digit() || hex && c.is_ascii_hexdigit() {
            saw = b'0';
            continue;
        }
        if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
            continue;
        }
        if saw == b'_' {
            return false;
        }
        saw = b'!';
    }
    saw != b'_'
}

/// Go's `strconv.ParseUint(s, 0, 64)`.
pub(crate) fn parse_uint(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.is_empty() {
        return None;
    }
    let (base, digits) =
        if b[0] == b'0' && b.len() >= 3 && matches!(b[1].to_ascii_lowercase(), b'b' | b'o' | b'x') {
            let base = match b[1].to_ascii_lowercase() {
                b'b' => 2,
                b'o' => 8,
                _ => 16,
            };
            (base, &s[2..])
        } else if b[0] == b'0' {
            (8, &s[1..])
        } else {
            (10, s)
        };
    let mut n: u64 = 0;
    let mut underscores = false;
    for c in digits.bytes() {
        let d = match c {
            b'_' => {
                underscores = true;
                continue;
            }
            b'0'..=b'9' => c - b'0',
            c if c.is_ascii_alphabetic() => c.to_ascii_lowercase() - b'a' + 10,
            _ => return None,
        };
        if d as u64 >= base {
            return None;
        }
        n = n.checked_mul(base)?.checked_add(d as u64)?;
    }
    if underscores && !underscore_ok(s) {
        return None;
    }
    Some(n)
}

/// Go's `strconv.ParseInt(s, 0, 64)`.
pub(crate) fn parse_int(s: &str) -> Option<i64> {
    let (neg, body) = match s.as_bytes().first()? {
        b'+' => (false, &s[1..]),
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    let u = parse_uint(body)?;
    if neg {
        if u > i64::MAX as u64 + 1 {
            return None;
        }
        Some((u as i64).wrapping_neg())
    } else {
        i64::try_from(u).ok()
    }
}

/// Go's `strconv.ParseFloat(s, 64)`: decimal or hexadecimal (`0x1.8p3`) with Go's underscore
/// rules, `inf`/`infinity`/`nan`; out of range is an error.
pub(crate) fn parse_float(s: &str) -> Option<f64> {
    parse_float_checked(s).ok()
}

/// [`parse_float`] with Go's error text (`strconv.ParseFloat: parsing "x": invalid syntax`).
pub(crate) fn parse_float_checked(s: &str) -> Result<f64, String> {
    let fail = |why: &str| format!("strconv.ParseFloat: parsing {}: {why}", quote(s));
    match parse_float_inner(s) {
        None => Err(fail("invalid syntax")),
        Some(v) if v.is_infinite() && !s.to_ascii_lowercase().contains("inf") => {
            Err(fail("value out of range"))
        }
        Some(v) => Ok(v),
    }
}

fn parse_float_inner(s: &str) -> Option<f64> {
    let (neg, body) = match s.as_bytes().first()? {
        b'+' => (false, &s[1..]),
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    let lower = body.to_ascii_lowercase();
    if lower == "inf" || lower == "infinity" {
        return Some(if neg { f64::NEG_INFINITY } else { f64::INFINITY });
    }
    if lower == "nan" {
        return Some(f64::NAN);
    }
    if body.contains('_') && !underscore_ok(s) {
        return None;
    }
    let clean: String = body.chars().filter(|c| *c != '_').collect();
    let v = if clean.len() > 2 && clean[..2].eq_ignore_ascii_case("0x") {
        parse_hex_float(&clean[2..])?
    } else {
        let ok = {
            let b = clean.as_bytes();
            let mut i = 0;
            let mut digits = 0;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
                digits += 1;
            }
            if i < b.len() && b[i] == b'.' {
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                    digits += 1;
                }
            }
            if digits > 0 && i < b.len() && (b[i] | 0x20) == b'e' {
                i += 1;
                if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
                    i += 1;
                }
                let start = i;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                if i == start {
                    return None;
                }
            }
            digits > 0 && i == b.len()
        };
        if !ok {
            return None;
        }
        clean.parse::<f64>().ok()?
    };
    Some(if neg { -v } else { v })
}

/// The part of a hexadecimal float after `0x`: mantissa digits, optional `.`, required `p`
/// exponent.
fn parse_hex_float(s: &str) -> Option<f64> {
    let (mant, exp) = s.split_once(['p', 'P'])?;
    let exp: i64 = {
        let (sign, digits) = match exp.as_bytes().first()? {
            b'+' => (1, &exp[1..]),
            b'-' => (-1, &exp[1..]),
            _ => (1, exp),
        };
        if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        sign * digits.parse::<i64>().unwrap_or(100_000).min(100_000)
    };
    let (int, frac) = mant.split_once('.').unwrap_or((mant, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().chain(frac.bytes()).all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let mut v = 0f64;
    for c in int.chars().chain(frac.chars()) {
        v = v * 16.0 + c.to_digit(16)? as f64;
    }
    let shift = exp - 4 * frac.len() as i64;
    Some(v * 2f64.powi(shift.clamp(-2000, 2000) as i32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_matches_go() {
        assert_eq!(quote("a\"b\\c\n\u{1}é\u{a0}"), r#""a\"b\\c\n\x01é\u00a0""#);
        assert_eq!(unicode_name('#'), "U+0023 '#'");
        assert_eq!(unicode_name('\u{7f}'), "U+007F");
    }

    #[test]
    fn unquoting_matches_go() {
        assert_eq!(unquote(r#""a\tb\x41\101\u00e9""#).unwrap(), "a\tbAAé".as_bytes());
        assert_eq!(unquote("`a\r\nb`").unwrap(), b"a\nb");
        assert_eq!(unquote(r#""\'""#), None);
        assert_eq!(unquote(r#""\400""#), None);
        assert_eq!(unquote(r#""\uD800""#), None);
        // A backslash before a multi-byte character (found by the query_template fuzz target:
        // it panicked slicing inside the character).
        assert_eq!(unquote_char("\\Ѫυ", b'"'), None);
        assert_eq!(unquote("\"\\Ѫ\""), None);
    }

    #[test]
    fn numbers_follow_go_syntax() {
        assert_eq!(parse_uint("0x1F"), Some(31));
        assert_eq!(parse_uint("017"), Some(15));
        assert_eq!(parse_uint("08"), None);
        assert_eq!(parse_uint("1_000"), Some(1000));
        assert_eq!(parse_uint("1__0"), None);
        assert_eq!(parse_int("-0b101"), Some(-5));
        assert_eq!(parse_int("9223372036854775808"), None);
        assert_eq!(parse_float("1_000.5"), Some(1000.5));
        assert_eq!(parse_float("0x1.8p1"), Some(3.0));
        assert_eq!(parse_float("1e400"), None);
        assert_eq!(parse_float("."), None);
        assert_eq!(parse_float("1e"), None);
    }
}
