//! Values a query template can produce (Flagger's functions return strings and one
//! `map[string]string`; literals and built-ins add bools, numbers and bytes), with Go's type
//! names, truth and `fmt` printing.

use std::rc::Rc;

use crate::Variables;

/// A Go value, as `reflect.Value` would hold it here.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    /// No value at all (an invalid `reflect.Value`): nil data, a missing result.
    Invalid,
    /// A nil `interface{}`.
    Nil,
    Bool(bool),
    Int(i64),
    /// A byte, from indexing a string.
    Uint8(u8),
    Float(f64),
    Complex(f64, f64),
    Str(String),
    Map(Rc<Variables>),
}

impl Value {
    /// Go's type name (`reflect.Type.String()`).
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Value::Invalid => "<invalid reflect.Value>",
            Value::Nil => "interface {}",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Uint8(_) => "uint8",
            Value::Float(_) => "float64",
            Value::Complex(..) => "complex128",
            Value::Str(_) => "string",
            Value::Map(_) => "map[string]string",
        }
    }

    /// Go's `isTrue`: the zero value of its type is false; nil is false.
    pub(crate) fn truth(&self) -> bool {
        match self {
            Value::Invalid | Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Uint8(u) => *u != 0,
            Value::Float(f) => *f != 0.0,
            Value::Complex(r, i) => *r != 0.0 || *i != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::Map(m) => !m.is_empty(),
        }
    }
}

/// Go's `%v` of a float: `strconv.FormatFloat(f, 'g', -1, 64)` (shortest digits; exponent form
/// below 1e-4 and from 1e6, since Go decides with precision 6 when printing the shortest).
pub(crate) fn format_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.into();
    }
    // Rust's {:e} gives the shortest round-trip digits, like Go's shortest formatting.
    let e = format!("{:e}", f.abs());
    let (mantissa, exp) = e.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("an integer exponent");
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let sign = if f < 0.0 { "-" } else { "" };
    if !(-4..6).contains(&exp) {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{first}{frac}e{esign}{:02}", exp.abs());
    }
    let n = digits.len() as i32;
    if exp < 0 {
        let zeros = "0".repeat((-exp - 1) as usize);
        return format!("{sign}0.{zeros}{digits}");
    }
    if exp + 1 >= n {
        let zeros = "0".repeat((exp + 1 - n) as usize);
        return format!("{sign}{digits}{zeros}");
    }
    let (int, frac) = digits.split_at((exp + 1) as usize);
    format!("{sign}{int}.{frac}")
}

/// Go's `fmt.Sprint` of one value (`%v`).
pub(crate) fn format_value(v: &Value) -> String {
    match v {
        Value::Invalid => "<invalid reflect.Value>".into(),
        Value::Nil => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Uint8(u) => u.to_string(),
        Value::Float(f) => format_float(*f),
        Value::Complex(r, i) => {
            let im = format_float(*i);
            let im = if im.starts_with(['-', '+']) {
                im
            } else {
                format!("+{im}")
            };
            format!("({}{im}i)", format_float(*r))
        }
        Value::Str(s) => s.clone(),
        Value::Map(m) => {
            let items: Vec<String> = m.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            format!("map[{}]", items.join(" "))
        }
    }
}

/// Go's `fmt.Sprint`: spaces between operands when neither side is a string.
pub(crate) fn sprint(args: &[Value]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        let is_string = |v: &Value| matches!(v, Value::Str(_));
        if i > 0 && !is_string(a) && !is_string(&args[i - 1]) {
            out.push(' ');
        }
        out.push_str(&format_value(a));
    }
    out
}

/// Go's `fmt.Sprintln`: always spaces, and a newline.
pub(crate) fn sprintln(args: &[Value]) -> String {
    let parts: Vec<String> = args.iter().map(format_value).collect();
    format!("{}\n", parts.join(" "))
}

/// Go's `fmt.Sprintf` for the verbs query templates use: `%v %s %d %q %t %f %g %e %x %X %%`,
/// with an optional precision for floats. Anything else is refused.
pub(crate) fn sprintf(format: &str, args: &[Value]) -> Result<String, String> {
    let mut out = String::new();
    let mut next = 0;
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut precision = None;
        if chars.peek() == Some(&'.') {
            chars.next();
            let mut p = String::new();
            while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                p.push(*d);
                chars.next();
            }
            precision = Some(p.parse::<usize>().unwrap_or(0));
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' && precision.is_none() {
            out.push('%');
            continue;
        }
        if !"vsdqtfgexX".contains(verb) || precision.is_some() && !"fge".contains(verb) {
            return Err(format!(
                "aviary: printf verb %{verb} is not supported in query templates"
            ));
        }
        let Some(arg) = args.get(next) else {
            out.push_str(&format!("%!{verb}(MISSING)"));
            continue;
        };
        next += 1;
        out.push_str(&format_verb(verb, precision, arg)?);
    }
    if next < args.len() {
        let extra: Vec<String> = args[next..]
            .iter()
            .map(|a| match a {
                Value::Nil | Value::Invalid => "<nil>".to_string(),
                a => format!("{}={}", a.type_name(), format_value(a)),
            })
            .collect();
        out.push_str(&format!("%!(EXTRA {})", extra.join(", ")));
    }
    Ok(out)
}

fn format_verb(verb: char, precision: Option<usize>, arg: &Value) -> Result<String, String> {
    if precision.is_some() && !matches!(arg, Value::Float(_)) {
        return Err(format!(
            "aviary: printf with a precision is supported for floats only in query templates, got a {}",
            arg.type_name()
        ));
    }
    let bad = || format!("%!{verb}({}={})", arg.type_name(), format_value(arg));
    Ok(match (verb, arg) {
        (_, Value::Nil | Value::Invalid) if verb != 'v' => format!("%!{verb}(<nil>)"),
        ('v', a) => format_value(a),
        // fmt formats a map's keys and values with the verb
        (_, Value::Map(m)) => {
            let mut items = Vec::with_capacity(m.len());
            for (k, v) in m.iter() {
                let k = format_verb(verb, precision, &Value::Str(k.clone()))?;
                let v = format_verb(verb, precision, &Value::Str(v.clone()))?;
                items.push(format!("{k}:{v}"));
            }
            format!("map[{}]", items.join(" "))
        }
        ('s', Value::Str(s)) => s.clone(),
        ('q', Value::Str(s)) => crate::strconv::quote(s),
        ('d', Value::Int(i)) => i.to_string(),
        ('d', Value::Uint8(u)) => u.to_string(),
        ('t', Value::Bool(b)) => b.to_string(),
        ('x', Value::Int(i)) if *i >= 0 => format!("{i:x}"),
        ('X', Value::Int(i)) if *i >= 0 => format!("{i:X}"),
        ('x', Value::Str(s)) => s.bytes().map(|b| format!("{b:02x}")).collect(),
        ('X', Value::Str(s)) => s.bytes().map(|b| format!("{b:02X}")).collect(),
        ('f', Value::Float(f)) => format!("{:.*}", precision.unwrap_or(6), f),
        ('f' | 'g' | 'e' | 'x' | 'X' | 'q', _) => {
            if matches!(
                arg,
                Value::Float(_) | Value::Int(_) | Value::Str(_) | Value::Map(_)
            ) && verb != 'f'
            {
                return Err(format!(
                    "aviary: printf %{verb} of a {} is not supported in query templates",
                    arg.type_name()
                ));
            }
            bad()
        }
        _ => bad(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_go() {
        for (f, want) in [
            (1.0, "1"),
            (0.5, "0.5"),
            (123456.0, "123456"),
            (1234567.0, "1.234567e+06"),
            (1e20, "1e+20"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-2.5e-7, "-2.5e-07"),
            (1.5e300, "1.5e+300"),
        ] {
            assert_eq!(format_float(f), want, "{f}");
        }
    }

    #[test]
    fn printf_reports_missing_and_extra_arguments() {
        assert_eq!(
            sprintf("%s-%d", &[Value::Str("a".into())]).unwrap(),
            "a-%!d(MISSING)"
        );
        assert_eq!(sprintf("x", &[Value::Int(3)]).unwrap(), "x%!(EXTRA int=3)");
        assert_eq!(sprintf("%d", &[Value::Str("a".into())]).unwrap(), "%!d(string=a)");
    }
}
