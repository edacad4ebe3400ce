//! The parser: Go's `text/template/parse` grammar, function and variable checks, and its error
//! texts (`template: <name>:<line>: <message>`, the line being that of the last token read).

use crate::lex::{Item, Kind, lex};
use crate::node::{Arg, Branch, Command, Node, Number, Pipe, Trees};
use crate::strconv::{parse_float, parse_float_checked, parse_int, parse_uint, quote, unquote, unquote_char};
use crate::{FUNCTIONS, ParseError};

/// Go's built-in template functions (they are always defined).
pub(crate) const BUILTINS: &[&str] = &[
    "and", "call", "html", "index", "slice", "js", "len", "not", "or", "print", "printf", "println",
    "urlquery", "eq", "ge", "gt", "le", "lt", "ne",
];

type Result<T> = std::result::Result<T, ParseError>;

/// What `itemList` stopped at.
enum Stop {
    End,
    Else,
}

/// What `textOrAction` produced: a node, or an `{{end}}` / `{{else}}` marker.
enum Parsed {
    Node(Node),
    Stop(Stop),
}

/// Parses `text` as the template `name`; returns every tree it defines.
pub(crate) fn parse(name: &str, text: &str) -> Result<Trees> {
    let mut p = Parser {
        name: name.to_string(),
        tokens: lex(text),
        next: 0,
        last: 0,
        vars: vec!["$".into()],
        range_depth: 0,
        action_line: 0,
        trees: Trees::new(),
    };
    let root = p.parse_top()?;
    p.add(name, root)?;
    Ok(p.trees)
}

struct Parser {
    name: String,
    tokens: Vec<Item>,
    /// Index of the next token.
    next: usize,
    /// Index of the furthest token read (Go reports errors at its line).
    last: usize,
    vars: Vec<String>,
    range_depth: usize,
    action_line: usize,
    trees: Trees,
}

impl Parser {
    fn error<T>(&self, message: impl Into<String>) -> Result<T> {
        let line = self.tokens[self.last].line;
        Err(ParseError(format!(
            "template: {}:{line}: {}",
            self.name,
            message.into()
        )))
    }

    fn next(&mut self) -> Item {
        let i = self.next.min(self.tokens.len() - 1);
        self.next = i + 1;
        self.last = self.last.max(i);
        self.tokens[i].clone()
    }

    fn backup(&mut self) {
        self.next -= 1;
    }

    /// Back to token `index` (Go's backup2/backup3 push read tokens back).
    fn back_to(&mut self, index: usize) {
        self.next = index;
    }

    fn peek(&mut self) -> Item {
        let t = self.next();
        self.backup();
        t
    }

    fn next_non_space(&mut self) -> Item {
        loop {
            let t = self.next();
            if t.kind != Kind::Space {
                return t;
            }
        }
    }

    fn peek_non_space(&mut self) -> Item {
        let t = self.next_non_space();
        self.backup();
        t
    }

    fn expect(&mut self, kind: Kind, context: &str) -> Result<Item> {
        let t = self.next_non_space();
        if t.kind != kind {
            return self.unexpected(&t, context);
        }
        Ok(t)
    }

    fn unexpected<T>(&self, token: &Item, context: &str) -> Result<T> {
        if token.kind == Kind::Error {
            let mut extra = String::new();
            if self.action_line != 0 && self.action_line != token.line {
                extra = format!(" in action started at {}:{}", self.name, self.action_line);
                if token.val.ends_with(" action") {
                    extra = extra[" in action".len()..].to_string();
                }
            }
            return self.error(format!("{token}{extra}"));
        }
        self.error(format!("unexpected {token} in {context}"))
    }

    /// Go's `Tree.add`: a name may be defined once with a non-empty body.
    fn add(&mut self, name: &str, root: Vec<Node>) -> Result<()> {
        match self.trees.get(name) {
            Some(existing) if !existing.iter().all(Node::is_empty) => {
                if !root.iter().all(Node::is_empty) {
                    return self.error(format!(
                        "template: multiple definition of template {}",
                        quote(name)
                    ));
                }
                Ok(())
            }
            _ => {
                self.trees.insert(name.to_string(), root);
                Ok(())
            }
        }
    }

    /// The top level: text, actions and `define`s until EOF.
    fn parse_top(&mut self) -> Result<Vec<Node>> {
        let mut root = Vec::new();
        while self.peek().kind != Kind::Eof {
            if self.peek().kind == Kind::LeftDelim {
                let delim = self.next;
                self.next();
                if self.next_non_space().kind == Kind::Define {
                    self.parse_definition()?;
                    continue;
                }
                self.back_to(delim);
            }
            match self.text_or_action()? {
                Parsed::Node(n) => root.push(n),
                Parsed::Stop(Stop::End) => return self.error("unexpected {{end}}"),
                Parsed::Stop(Stop::Else) => return self.error("unexpected {{else}}"),
            }
        }
        Ok(root)
    }

    /// `{{define "name"}} … {{end}}`: a tree of its own, with fresh variables.
    fn parse_definition(&mut self) -> Result<()> {
        let context = "define clause";
        let t = self.next_non_space();
        if !matches!(t.kind, Kind::String | Kind::RawString) {
            return self.unexpected(&t, context);
        }
        let Some(name) = unquote(&t.val) else {
            return self.error("invalid syntax");
        };
        let name = String::from_utf8_lossy(&name).into_owned();
        self.expect(Kind::RightDelim, context)?;
        let (root, stop) = self.in_new_tree(|p| p.item_list())?;
        if let Stop::Else = stop {
            return self.error(format!("unexpected {{{{else}}}} in {context}"));
        }
        self.add(&name, root)
    }

    /// Runs `f` with the state of a new tree (variables, range depth), then restores ours.
    fn in_new_tree<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let vars = std::mem::replace(&mut self.vars, vec!["$".into()]);
        let depth = std::mem::replace(&mut self.range_depth, 0);
        let r = f(self);
        self.vars = vars;
        self.range_depth = depth;
        r
    }

    /// Nodes until `{{end}}` or `{{else}}`.
    fn item_list(&mut self) -> Result<(Vec<Node>, Stop)> {
        let mut list = Vec::new();
        while self.peek_non_space().kind != Kind::Eof {
            match self.text_or_action()? {
                Parsed::Node(n) => list.push(n),
                Parsed::Stop(s) => return Ok((list, s)),
            }
        }
        self.error("unexpected EOF")
    }

    fn text_or_action(&mut self) -> Result<Parsed> {
        let t = self.next_non_space();
        match t.kind {
            Kind::Text => Ok(Parsed::Node(Node::Text(t.val))),
            Kind::LeftDelim => {
                self.action_line = t.line;
                let r = self.action();
                self.action_line = 0;
                r
            }
            _ => self.unexpected(&t, "input"),
        }
    }

    fn action(&mut self) -> Result<Parsed> {
        let t = self.next_non_space();
        let node = match t.kind {
            Kind::Block => self.block_control()?,
            Kind::Break => self.loop_control(t.pos, "break")?,
            Kind::Continue => self.loop_control(t.pos, "continue")?,
            Kind::Else => return self.else_control().map(|_| Parsed::Stop(Stop::Else)),
            Kind::End => {
                self.expect(Kind::RightDelim, "end")?;
                return Ok(Parsed::Stop(Stop::End));
            }
            Kind::If => Node::If(self.parse_control("if")?),
            Kind::Range => Node::Range(self.parse_control("range")?),
            Kind::Template => self.template_control()?,
            Kind::With => Node::With(self.parse_control("with")?),
            _ => {
                self.backup();
                let pos = self.peek().pos;
                // Variables declared here live until the enclosing {{end}}.
                Node::Action {
                    pos,
                    pipe: self.pipeline("command", Kind::RightDelim)?,
                }
            }
        };
        Ok(Parsed::Node(node))
    }

    fn loop_control(&mut self, pos: usize, word: &str) -> Result<Node> {
        let t = self.next_non_space();
        if t.kind != Kind::RightDelim {
            return self.unexpected(&t, &format!("{{{{{word}}}}}"));
        }
        if self.range_depth == 0 {
            return self.error(format!("{{{{{word}}}}} outside {{{{range}}}}"));
        }
        Ok(if word == "break" {
            Node::Break { pos }
        } else {
            Node::Continue { pos }
        })
    }

    /// `{{else}}`, or the `else` of `{{else if …}}` / `{{else with …}}` (the keyword stays).
    fn else_control(&mut self) -> Result<()> {
        let peek = self.peek_non_space();
        if matches!(peek.kind, Kind::If | Kind::With) {
            return Ok(());
        }
        self.expect(Kind::RightDelim, "else")?;
        Ok(())
    }

    fn parse_control(&mut self, context: &str) -> Result<Branch> {
        let vars = self.vars.len();
        let r = self.parse_control_body(context);
        self.vars.truncate(vars);
        r
    }

    fn parse_control_body(&mut self, context: &str) -> Result<Branch> {
        let pipe = self.pipeline(context, Kind::RightDelim)?;
        if context == "range" {
            self.range_depth += 1;
        }
        let body = self.item_list();
        if context == "range" {
            self.range_depth -= 1;
        }
        let (list, stop) = body?;
        let mut else_list = None;
        if let Stop::Else = stop {
            // {{else if b}} is {{else}}{{if b}}…{{end}}{{end}} with the last {{end}} implied
            // (the same for with).
            if context == "if" && self.peek().kind == Kind::If {
                self.next();
                else_list = Some(vec![Node::If(self.parse_control("if")?)]);
            } else if context == "with" && self.peek().kind == Kind::With {
                self.next();
                else_list = Some(vec![Node::With(self.parse_control("with")?)]);
            } else {
                let (list, stop) = self.item_list()?;
                if let Stop::Else = stop {
                    return self.error("expected end; found {{else}}");
                }
                else_list = Some(list);
            }
        }
        Ok(Branch {
            pos: pipe.pos,
            pipe,
            list,
            else_list,
        })
    }

    /// `{{block "name" pipeline}} … {{end}}`: defines the template and calls it.
    fn block_control(&mut self) -> Result<Node> {
        let context = "block clause";
        let t = self.next_non_space();
        let name = self.template_name(&t, context)?;
        let pipe = self.pipeline(context, Kind::RightDelim)?;
        let (root, stop) = self.in_new_tree(|p| p.item_list())?;
        if let Stop::Else = stop {
            return self.error(format!("unexpected {{{{else}}}} in {context}"));
        }
        self.add(&name, root)?;
        Ok(Node::Template {
            pos: t.pos,
            name,
            pipe: Some(pipe),
        })
    }

    fn template_control(&mut self) -> Result<Node> {
        let context = "template clause";
        let t = self.next_non_space();
        let name = self.template_name(&t, context)?;
        let pipe = if self.next_non_space().kind != Kind::RightDelim {
            self.backup();
            Some(self.pipeline(context, Kind::RightDelim)?)
        } else {
            None
        };
        Ok(Node::Template {
            pos: t.pos,
            name,
            pipe,
        })
    }

    fn template_name(&self, t: &Item, context: &str) -> Result<String> {
        match t.kind {
            Kind::String | Kind::RawString => match unquote(&t.val) {
                Some(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
                None => self.error("invalid syntax"),
            },
            _ => self.unexpected(t, context),
        }
    }

    fn pipeline(&mut self, context: &str, end: Kind) -> Result<Pipe> {
        let pos = self.peek_non_space().pos;
        let mut pipe = Pipe {
            pos,
            is_assign: false,
            decl: Vec::new(),
            cmds: Vec::new(),
        };
        self.declarations(&mut pipe, context)?;
        loop {
            let t = self.next_non_space();
            match t.kind {
                k if k == end => {
                    self.check_pipeline(&pipe, context)?;
                    return Ok(pipe);
                }
                Kind::Bool
                | Kind::CharConstant
                | Kind::Complex
                | Kind::Dot
                | Kind::Field
                | Kind::Identifier
                | Kind::Number
                | Kind::Nil
                | Kind::RawString
                | Kind::String
                | Kind::Variable
                | Kind::LeftParen => {
                    self.backup();
                    let cmd = self.command()?;
                    pipe.cmds.push(cmd);
                }
                _ => return self.unexpected(&t, context),
            }
        }
    }

    /// `$x :=`, `$x =`, and range's `$i, $v :=`.
    fn declarations(&mut self, pipe: &mut Pipe, context: &str) -> Result<()> {
        loop {
            if self.peek_non_space().kind != Kind::Variable {
                return Ok(());
            }
            let at = self.next;
            // skip spaces before the variable (peek_non_space left them read)
            let v = self.next_non_space();
            let after_variable = self.peek();
            let next = self.peek_non_space();
            match next.kind {
                Kind::Assign | Kind::Declare => {
                    pipe.is_assign = next.kind == Kind::Assign;
                    self.next_non_space();
                    pipe.decl.push(v.val.clone());
                    self.vars.push(v.val);
                    return Ok(());
                }
                Kind::Char if next.val == "," => {
                    self.next_non_space();
                    pipe.decl.push(v.val.clone());
                    self.vars.push(v.val);
                    if context == "range" && pipe.decl.len() < 2 {
                        match self.peek_non_space().kind {
                            Kind::Variable | Kind::RightDelim | Kind::RightParen => continue,
                            _ => return self.error("range can only initialize variables"),
                        }
                    }
                    return self.error(format!("too many declarations in {context}"));
                }
                _ if after_variable.kind == Kind::Space => {
                    self.back_to(at);
                    return Ok(());
                }
                _ => {
                    self.back_to(at);
                    return Ok(());
                }
            }
        }
    }

    fn check_pipeline(&self, pipe: &Pipe, context: &str) -> Result<()> {
        if pipe.cmds.is_empty() {
            return self.error(format!("missing value for {context}"));
        }
        for (i, c) in pipe.cmds.iter().enumerate().skip(1) {
            if matches!(
                c.args[0],
                Arg::Bool { .. }
                    | Arg::Dot { .. }
                    | Arg::Nil { .. }
                    | Arg::Number { .. }
                    | Arg::String { .. }
            ) {
                return self.error(format!("non executable command in pipeline stage {}", i + 1));
            }
        }
        Ok(())
    }

    fn command(&mut self) -> Result<Command> {
        let pos = self.peek_non_space().pos;
        let mut cmd = Command {
            pos,
            args: Vec::new(),
        };
        loop {
            self.peek_non_space();
            if let Some(operand) = self.operand()? {
                cmd.args.push(operand);
            }
            let t = self.next();
            match t.kind {
                Kind::Space => continue,
                Kind::RightDelim | Kind::RightParen => self.backup(),
                Kind::Pipe => {}
                _ => return self.unexpected(&t, "operand"),
            }
            break;
        }
        if cmd.args.is_empty() {
            return self.error("empty command");
        }
        Ok(cmd)
    }

    fn operand(&mut self) -> Result<Option<Arg>> {
        let Some(node) = self.term()? else {
            return Ok(None);
        };
        if self.peek().kind != Kind::Field {
            return Ok(Some(node));
        }
        let pos = self.peek().pos;
        let mut fields = Vec::new();
        while self.peek().kind == Kind::Field {
            fields.push(self.next().val[1..].to_string());
        }
        Ok(Some(match node {
            Arg::Field { mut ident, .. } => {
                ident.extend(fields);
                Arg::Field { pos, ident }
            }
            Arg::Variable { mut ident, .. } => {
                ident.extend(fields);
                Arg::Variable { pos, ident }
            }
            n @ (Arg::Bool { .. }
            | Arg::String { .. }
            | Arg::Number { .. }
            | Arg::Nil { .. }
            | Arg::Dot { .. }) => {
                return self.error(format!("unexpected . after term {}", quote(&n.to_string())));
            }
            n => Arg::Chain {
                pos,
                node: Box::new(n),
                fields,
            },
        }))
    }

    fn term(&mut self) -> Result<Option<Arg>> {
        let t = self.next_non_space();
        let pos = t.pos;
        let arg = match t.kind {
            Kind::Identifier => {
                if !FUNCTIONS.contains(&t.val.as_str()) && !BUILTINS.contains(&t.val.as_str()) {
                    return self.error(format!("function {} not defined", quote(&t.val)));
                }
                Arg::Identifier { pos, name: t.val }
            }
            Kind::Dot => Arg::Dot { pos },
            Kind::Nil => Arg::Nil { pos },
            Kind::Variable => {
                let ident: Vec<String> = t.val.split('.').map(str::to_string).collect();
                if !self.vars.contains(&ident[0]) {
                    return self.error(format!("undefined variable {}", quote(&ident[0])));
                }
                Arg::Variable { pos, ident }
            }
            Kind::Field => Arg::Field {
                pos,
                ident: vec![t.val[1..].to_string()],
            },
            Kind::Bool => Arg::Bool {
                pos,
                val: t.val == "true",
            },
            Kind::CharConstant | Kind::Complex | Kind::Number => match number(&t) {
                Ok(num) => Arg::Number { pos, num },
                Err(e) => return self.error(e),
            },
            Kind::LeftParen => Arg::Pipe(Box::new(
                self.pipeline("parenthesized pipeline", Kind::RightParen)?,
            )),
            Kind::String | Kind::RawString => match unquote(&t.val) {
                Some(b) => Arg::String {
                    pos,
                    quoted: t.val,
                    text: String::from_utf8_lossy(&b).into_owned(),
                },
                None => return self.error("invalid syntax"),
            },
            _ => {
                self.backup();
                return Ok(None);
            }
        };
        Ok(Some(arg))
    }
}

/// Go's `newNumber`: a char constant, complex, integer or float literal.
fn number(t: &Item) -> std::result::Result<Number, String> {
    let text = t.val.as_str();
    let mut n = Number {
        text: text.to_string(),
        int: None,
        uint: None,
        float: None,
        complex: None,
        is_char: false,
    };
    match t.kind {
        Kind::CharConstant => {
            let (_, code, tail) = unquote_char(&text[1..], b'\'').ok_or("invalid syntax")?;
            if tail != "'" {
                return Err(format!("malformed character constant: {text}"));
            }
            n.int = Some(code as i64);
            n.uint = Some(code as u64);
            n.float = Some(code as f64);
            n.is_char = true;
            return Ok(n);
        }
        Kind::Complex => {
            n.complex = Some(scan_complex(text)?);
            simplify_complex(&mut n);
            return Ok(n);
        }
        _ => {}
    }
    if let Some(imag) = text.strip_suffix('i')
        && let Some(f) = parse_float(imag)
    {
        n.complex = Some((0.0, f));
        simplify_complex(&mut n);
        return Ok(n);
    }
    let u = parse_uint(text);
    n.uint = u;
    if let Some(i) = parse_int(text) {
        n.int = Some(i);
        if i == 0 {
            n.uint = Some(0); // -0
        }
    }
    if let Some(i) = n.int {
        n.float = Some(i as f64);
    } else if let Some(u) = n.uint {
        n.float = Some(u as f64);
    } else if let Some(f) = parse_float(text) {
        if !text.contains(['.', 'e', 'E', 'p', 'P']) {
            return Err(format!("integer overflow: {}", quote(text)));
        }
        n.float = Some(f);
        whole_number(&mut n, f);
    }
    if n.int.is_none() && n.uint.is_none() && n.float.is_none() {
        return Err(format!("illegal number syntax: {}", quote(text)));
    }
    Ok(n)
}

/// Go's `fmt.Sscan` of a `complex128` (`1+2i`): a float token, a sign, a float token, `i`.
fn scan_complex(text: &str) -> std::result::Result<(f64, f64), String> {
    const SYNTAX: &str = "syntax error scanning complex number";
    let b = text.as_bytes();
    let mut i = 0;
    let float_token = |i: &mut usize| {
        let start = *i;
        let accept = |i: &mut usize, set: &[u8]| {
            if *i < b.len() && set.contains(&b[*i]) {
                *i += 1;
                true
            } else {
                false
            }
        };
        accept(i, b"+-");
        let (mut digits, mut exp): (&[u8], &[u8]) = (b"0123456789_", b"eEpP");
        if accept(i, b"0") && accept(i, b"xX") {
            digits = b"0123456789abcdefABCDEF_";
            exp = b"pP";
        }
        while accept(i, digits) {}
        if accept(i, b".") {
            while accept(i, digits) {}
        }
        if accept(i, exp) {
            accept(i, b"+-");
            while accept(i, b"0123456789_") {}
        }
        &text[start..*i]
    };
    let real = float_token(&mut i);
    if i >= b.len() || !matches!(b[i], b'+' | b'-') {
        return Err(SYNTAX.into());
    }
    let imag = float_token(&mut i);
    if i >= b.len() || b[i] != b'i' {
        return Err(SYNTAX.into());
    }
    Ok((parse_float_checked(real)?, parse_float_checked(imag)?))
}

/// A complex constant with no imaginary part is also a float (and an int when whole).
fn simplify_complex(n: &mut Number) {
    let Some((re, im)) = n.complex else { return };
    if im == 0.0 {
        n.float = Some(re);
        whole_number(n, re);
    }
}

/// A float that is a whole number in range is also an int (and a uint when not negative).
fn whole_number(n: &mut Number, f: f64) {
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if n.int.is_none() && f.fract() == 0.0 && (-TWO_63..TWO_63).contains(&f) {
        n.int = Some(f as i64);
    }
    if n.uint.is_none() && f.fract() == 0.0 && (0.0..2.0 * TWO_63).contains(&f) {
        n.uint = Some(f as u64);
    }
}
