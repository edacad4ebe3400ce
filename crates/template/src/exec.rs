//! Execution, as Go's `text/template` runs a query template for Flagger: no data (`.` is nil),
//! `missingkey=error`, Flagger's functions and Go's built-ins, with Go's error texts
//! (`template: tmpl:1:3: executing "tmpl" at <variables>: map has no entry for key "x"`).

use std::rc::Rc;

use crate::node::{Arg, Branch, Command, Node, Pipe, Trees};
use crate::value::{Value, format_value, sprint, sprintf, sprintln};
use crate::{ExecError, NAME, Variables};

/// The values behind Flagger's template functions (its `MetricTemplateModel`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Model {
    pub name: String,
    pub namespace: String,
    pub target: String,
    pub service: String,
    pub ingress: String,
    pub route: String,
    pub interval: String,
    pub variables: Variables,
}

/// Nested `{{template}}` calls allowed (Go allows 100000; each level is a Rust stack frame).
const MAX_DEPTH: usize = 1000;

pub(crate) fn execute(text: &str, trees: &Trees, model: &Model) -> std::result::Result<String, ExecError> {
    let mut s = State {
        text,
        trees,
        model,
        variables: Rc::new(model.variables.clone()),
        vars: vec![("$".into(), Value::Invalid)],
        node: None,
        name: NAME.to_string(),
        depth: 0,
        out: String::new(),
    };
    let root = trees.get(NAME).map(Vec::as_slice).unwrap_or(&[]);
    match s.walk_list(&Value::Invalid, root) {
        Ok(()) => Ok(s.out),
        Err(Flow::Error(e)) => Err(e),
        Err(Flow::Break | Flow::Continue) => unreachable!("the parser keeps break and continue inside range"),
    }
}

/// How a walk ends early: an error, or `{{break}}` / `{{continue}}` on their way to the range.
enum Flow {
    Error(ExecError),
    Break,
    Continue,
}

type Result<T> = std::result::Result<T, Flow>;

/// The parameter types of the functions, as far as argument conversion cares.
#[derive(Clone, Copy, PartialEq)]
enum Param {
    /// `reflect.Value`: anything, including no value.
    Value,
    /// `any`: anything; no value becomes nil.
    Any,
    String,
}

impl Param {
    fn name(self) -> &'static str {
        match self {
            Param::Value => "reflect.Value",
            Param::Any => "interface {}",
            Param::String => "string",
        }
    }
}

/// A function's signature: fixed parameters, then an optional variadic one.
struct Signature {
    fixed: &'static [Param],
    variadic: Option<Param>,
}

fn signature(name: &str) -> Option<Signature> {
    use Param::*;
    let sig = |fixed, variadic| Some(Signature { fixed, variadic });
    match name {
        "and" | "or" | "eq" | "index" | "slice" | "call" => sig(&[Value], Some(Value)),
        "not" | "len" => sig(&[Value], None),
        "ne" | "lt" | "le" | "gt" | "ge" => sig(&[Value, Value], None),
        "print" | "println" | "html" | "js" | "urlquery" => sig(&[], Some(Any)),
        "printf" => sig(&[String], Some(Any)),
        n if crate::FUNCTIONS.contains(&n) => sig(&[], None),
        _ => None,
    }
}

struct State<'a> {
    text: &'a str,
    trees: &'a Trees,
    model: &'a Model,
    variables: Rc<Variables>,
    vars: Vec<(String, Value)>,
    /// The node errors are reported at: its position and text.
    node: Option<(usize, String)>,
    /// The template being executed.
    name: String,
    depth: usize,
    out: String,
}

impl State<'_> {
    fn at(&mut self, pos: usize, text: impl ToString) {
        self.node = Some((pos, text.to_string()));
    }

    fn error<T>(&self, message: impl std::fmt::Display) -> Result<T> {
        let text = match &self.node {
            None => format!("template: {}: {message}", self.name),
            Some((pos, context)) => {
                let before = &self.text[..(*pos).min(self.text.len())];
                let line = 1 + before.matches('\n').count();
                let col = match before.rfind('\n') {
                    Some(i) => pos - (i + 1),
                    None => *pos,
                };
                format!(
                    "template: {NAME}:{line}:{col}: executing \"{}\" at <{context}>: {message}",
                    self.name
                )
            }
        };
        Err(Flow::Error(ExecError(text)))
    }

    // === variables ===

    fn push(&mut self, name: &str, value: Value) {
        self.vars.push((name.to_string(), value));
    }

    fn set_var(&mut self, name: &str, value: Value) -> Result<()> {
        match self.vars.iter_mut().rev().find(|(n, _)| n == name) {
            Some(slot) => {
                slot.1 = value;
                Ok(())
            }
            None => self.error(format!("undefined variable: {name}")),
        }
    }

    fn var_value(&self, name: &str) -> Result<Value> {
        match self.vars.iter().rev().find(|(n, _)| n == name) {
            Some((_, v)) => Ok(v.clone()),
            None => self.error(format!("undefined variable: {name}")),
        }
    }

    // === walking ===

    fn walk_list(&mut self, dot: &Value, list: &[Node]) -> Result<()> {
        list.iter().try_for_each(|n| self.walk(dot, n))
    }

    fn walk(&mut self, dot: &Value, node: &Node) -> Result<()> {
        match node {
            Node::Text(t) => {
                self.out.push_str(t);
                Ok(())
            }
            Node::Action { pos, pipe } => {
                self.at(*pos, node);
                let v = self.eval_pipeline(dot, pipe)?;
                if pipe.decl.is_empty() {
                    self.at(*pos, node);
                    let printed = match v {
                        Value::Invalid => "<no value>".to_string(),
                        v => format_value(&v),
                    };
                    self.out.push_str(&printed);
                }
                Ok(())
            }
            Node::If(b) => self.walk_if_or_with(false, dot, b),
            Node::With(b) => self.walk_if_or_with(true, dot, b),
            Node::Range(b) => self.walk_range(dot, b, node),
            Node::Template { pos, name, pipe } => self.walk_template(dot, *pos, name, pipe.as_ref(), node),
            Node::Break { .. } => Err(Flow::Break),
            Node::Continue { .. } => Err(Flow::Continue),
        }
    }

    fn walk_if_or_with(&mut self, with: bool, dot: &Value, b: &Branch) -> Result<()> {
        let mark = self.vars.len();
        let r = (|| {
            let v = self.eval_pipeline(dot, &b.pipe)?;
            if v.truth() {
                let dot = if with { v } else { dot.clone() };
                self.walk_list(&dot, &b.list)
            } else if let Some(e) = &b.else_list {
                self.walk_list(dot, e)
            } else {
                Ok(())
            }
        })();
        self.vars.truncate(mark);
        r
    }

    fn walk_range(&mut self, dot: &Value, b: &Branch, node: &Node) -> Result<()> {
        self.at(b.pos, node);
        let mark = self.vars.len();
        let r = self.range_items(dot, b);
        self.vars.truncate(mark);
        match r {
            Ok(true) => Ok(()),
            Ok(false) => match &b.else_list {
                Some(e) => self.walk_list(dot, e),
                None => Ok(()),
            },
            Err(Flow::Break) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Runs the range body per element; false when there was none (the else branch runs).
    fn range_items(&mut self, dot: &Value, b: &Branch) -> Result<bool> {
        let v = self.eval_pipeline(dot, &b.pipe)?;
        let items: Vec<(Value, Value)> = match &v {
            Value::Int(_) | Value::Uint8(_) if b.pipe.decl.len() > 1 => {
                return self.error(format!(
                    "can't use {} to iterate over more than one variable",
                    format_value(&v)
                ));
            }
            Value::Int(n) => (0..*n).map(|i| (Value::Invalid, Value::Int(i))).collect(),
            Value::Uint8(n) => (0..*n).map(|i| (Value::Invalid, Value::Uint8(i))).collect(),
            Value::Map(m) => m
                .iter()
                .map(|(k, v)| (Value::Str(k.clone()), Value::Str(v.clone())))
                .collect(),
            Value::Invalid | Value::Nil => Vec::new(),
            other => return self.error(format!("range can't iterate over {}", format_value(other))),
        };
        if items.is_empty() {
            return Ok(false);
        }
        let mark = self.vars.len();
        for (index, elem) in items {
            self.set_range_vars(&b.pipe, index, elem.clone())?;
            let r = self.walk_list(&elem, &b.list);
            self.vars.truncate(mark);
            match r {
                Ok(()) | Err(Flow::Continue) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// `$v` gets the element; with two variables the first gets the index.
    fn set_range_vars(&mut self, pipe: &Pipe, index: Value, elem: Value) -> Result<()> {
        let n = self.vars.len();
        match (pipe.decl.len(), pipe.is_assign) {
            (0, _) => {}
            (1, true) => self.set_var(&pipe.decl[0], elem)?,
            (1, false) => self.vars[n - 1].1 = elem,
            (_, true) => {
                self.set_var(&pipe.decl[0], index)?;
                self.set_var(&pipe.decl[1], elem)?;
            }
            (_, false) => {
                self.vars[n - 1].1 = elem;
                self.vars[n - 2].1 = index;
            }
        }
        Ok(())
    }

    fn walk_template(
        &mut self,
        dot: &Value,
        pos: usize,
        name: &str,
        pipe: Option<&Pipe>,
        node: &Node,
    ) -> Result<()> {
        self.at(pos, node);
        let Some(tree) = self.trees.get(name) else {
            return self.error(format!("template {} not defined", crate::strconv::quote(name)));
        };
        if self.depth == MAX_DEPTH {
            return self.error(format!("exceeded maximum template depth ({MAX_DEPTH})"));
        }
        let dot = match pipe {
            Some(p) => self.eval_pipeline(dot, p)?,
            None => dot.clone(),
        };
        // No dynamic scoping: the called template sees only `$`.
        let vars = std::mem::replace(&mut self.vars, vec![("$".into(), dot.clone())]);
        let caller = std::mem::replace(&mut self.name, name.to_string());
        self.depth += 1;
        let r = self.walk_list(&dot, tree);
        self.depth -= 1;
        self.name = caller;
        self.vars = vars;
        r
    }

    // === pipelines and commands ===

    fn eval_pipeline(&mut self, dot: &Value, pipe: &Pipe) -> Result<Value> {
        self.at(pipe.pos, pipe);
        let mut value = None;
        for cmd in &pipe.cmds {
            value = Some(self.eval_command(dot, cmd, value)?);
        }
        let value = value.unwrap_or(Value::Invalid);
        for v in &pipe.decl {
            if pipe.is_assign {
                self.set_var(v, value.clone())?;
            } else {
                self.push(v, value.clone());
            }
        }
        Ok(value)
    }

    fn not_a_function(&self, args: &[Arg], final_: &Option<Value>) -> Result<()> {
        if args.len() > 1 || final_.is_some() {
            return self.error(format!("can't give argument to non-function {}", args[0]));
        }
        Ok(())
    }

    fn eval_command(&mut self, dot: &Value, cmd: &Command, final_: Option<Value>) -> Result<Value> {
        let first = &cmd.args[0];
        match first {
            Arg::Field { pos, ident } => {
                return self.eval_field_node(dot, *pos, first, ident, &cmd.args, final_);
            }
            Arg::Chain { pos, node, fields } => {
                return self.eval_chain_node(dot, *pos, first, node, fields, &cmd.args, final_);
            }
            Arg::Identifier { pos, name } => {
                return self.eval_function(dot, *pos, name, Some(cmd), &cmd.args, final_);
            }
            Arg::Pipe(p) => {
                self.not_a_function(&cmd.args, &final_)?;
                return self.eval_pipeline(dot, p);
            }
            Arg::Variable { pos, ident } => {
                return self.eval_variable_node(dot, *pos, first, ident, &cmd.args, final_);
            }
            _ => {}
        }
        self.at(first.pos(), first);
        self.not_a_function(&cmd.args, &final_)?;
        match first {
            Arg::Bool { val, .. } => Ok(Value::Bool(*val)),
            Arg::Dot { .. } => Ok(dot.clone()),
            Arg::Nil { .. } => self.error("nil is not a command"),
            Arg::Number { num, .. } => self.ideal_constant(num),
            Arg::String { text, .. } => Ok(Value::Str(text.clone())),
            _ => self.error(format!(
                "can't evaluate command {}",
                crate::strconv::quote(&first.to_string())
            )),
        }
    }

    /// A number whose type only its syntax tells: complex, float (with a `.`, exponent or
    /// hex float syntax), else int.
    fn ideal_constant(&self, num: &crate::node::Number) -> Result<Value> {
        let t = &num.text;
        let hex_int = t.len() > 2
            && t.starts_with('0')
            && matches!(t.as_bytes()[1], b'x' | b'X')
            && !t.contains(['p', 'P']);
        if let Some((re, im)) = num.complex {
            return Ok(Value::Complex(re, im));
        }
        if let Some(f) = num.float
            && !hex_int
            && !num.is_char
            && t.contains(['.', 'e', 'E', 'p', 'P'])
        {
            return Ok(Value::Float(f));
        }
        if let Some(i) = num.int {
            return Ok(Value::Int(i));
        }
        if num.uint.is_some() {
            return self.error(format!("{t} overflows int"));
        }
        Ok(Value::Invalid)
    }

    fn eval_field_node(
        &mut self,
        dot: &Value,
        pos: usize,
        node: &Arg,
        ident: &[String],
        args: &[Arg],
        final_: Option<Value>,
    ) -> Result<Value> {
        self.at(pos, node);
        self.eval_field_chain(dot.clone(), ident, args, final_)
    }

    #[allow(clippy::too_many_arguments)]
    fn eval_chain_node(
        &mut self,
        dot: &Value,
        pos: usize,
        chain: &Arg,
        node: &Arg,
        fields: &[String],
        args: &[Arg],
        final_: Option<Value>,
    ) -> Result<Value> {
        self.at(pos, chain);
        if let Arg::Nil { .. } = node {
            return self.error(format!("indirection through explicit nil in {chain}"));
        }
        let receiver = self.eval_arg(dot, None, node)?;
        self.eval_field_chain(receiver, fields, args, final_)
    }

    fn eval_variable_node(
        &mut self,
        _dot: &Value,
        pos: usize,
        node: &Arg,
        ident: &[String],
        args: &[Arg],
        final_: Option<Value>,
    ) -> Result<Value> {
        self.at(pos, node);
        let value = self.var_value(&ident[0])?;
        if ident.len() == 1 {
            self.not_a_function(args, &final_)?;
            return Ok(value);
        }
        self.eval_field_chain(value, &ident[1..], args, final_)
    }

    fn eval_field_chain(
        &mut self,
        mut receiver: Value,
        ident: &[String],
        args: &[Arg],
        final_: Option<Value>,
    ) -> Result<Value> {
        let (last, walk) = ident.split_last().expect("a chain has fields");
        for name in walk {
            receiver = self.eval_field(name, &[], None, receiver)?;
        }
        self.eval_field(last, args, final_, receiver)
    }

    /// `.name` of a value: a map key (nothing here has methods or struct fields).
    fn eval_field(
        &mut self,
        name: &str,
        args: &[Arg],
        final_: Option<Value>,
        receiver: Value,
    ) -> Result<Value> {
        let has_args = args.len() > 1 || final_.is_some();
        match receiver {
            Value::Invalid => self.error(format!(
                "nil data; no entry for key {}",
                crate::strconv::quote(name)
            )),
            Value::Nil => self.error(format!("nil pointer evaluating interface {{}}.{name}")),
            Value::Map(m) => {
                if has_args {
                    return self.error(format!("{name} is not a method but has arguments"));
                }
                match m.get(name) {
                    Some(v) => Ok(Value::Str(v.clone())),
                    None => self.error(format!(
                        "map has no entry for key {}",
                        crate::strconv::quote(name)
                    )),
                }
            }
            other => self.error(format!(
                "can't evaluate field {name} in type {}",
                other.type_name()
            )),
        }
    }

    /// An argument: evaluated, then converted to the parameter type (`None`: untyped, as for
    /// the head of a chain).
    fn eval_arg(&mut self, dot: &Value, param: Option<Param>, n: &Arg) -> Result<Value> {
        self.at(n.pos(), n);
        let v = match n {
            Arg::Dot { .. } => dot.clone(),
            Arg::Nil { .. } => match param {
                Some(Param::Value) => return Ok(Value::Invalid),
                Some(Param::Any) => return Ok(Value::Nil),
                Some(p) => return self.error(format!("cannot assign nil to {}", p.name())),
                None => return Ok(Value::Invalid),
            },
            Arg::Field { pos, ident } => {
                let args = std::slice::from_ref(n);
                self.eval_field_node(dot, *pos, n, ident, args, None)?
            }
            Arg::Variable { pos, ident } => self.eval_variable_node(dot, *pos, n, ident, &[], None)?,
            Arg::Pipe(p) => self.eval_pipeline(dot, p)?,
            Arg::Identifier { pos, name } => self.eval_function(dot, *pos, name, None, &[], None)?,
            Arg::Chain { pos, node, fields } => {
                self.eval_chain_node(dot, *pos, n, node, fields, &[], None)?
            }
            Arg::Bool { val, .. } if param != Some(Param::String) => return Ok(Value::Bool(*val)),
            Arg::Number { num, .. } if param != Some(Param::String) => return self.ideal_constant(num),
            Arg::String { text, .. } => return Ok(Value::Str(text.clone())),
            _ => return self.error(format!("expected string; found {n}")),
        };
        self.validate(v, param)
    }

    /// Go's `validateType` for our parameter types.
    fn validate(&self, v: Value, param: Option<Param>) -> Result<Value> {
        match (param, v) {
            (None | Some(Param::Value), v) => Ok(v),
            (Some(Param::Any), Value::Invalid) => Ok(Value::Nil),
            (Some(Param::Any), v) => Ok(v),
            (Some(Param::String), Value::Invalid) => self.error("invalid value; expected string"),
            (Some(Param::String), v @ Value::Str(_)) => Ok(v),
            (Some(Param::String), v) => self.error(format!(
                "wrong type for value; expected string; got {}",
                v.type_name()
            )),
        }
    }

    // === functions ===

    /// A function call: `args[0]` is the function's own node (a command's first word).
    fn eval_function(
        &mut self,
        dot: &Value,
        pos: usize,
        name: &str,
        cmd: Option<&Command>,
        args: &[Arg],
        final_: Option<Value>,
    ) -> Result<Value> {
        self.at(pos, name);
        let Some(sig) = signature(name) else {
            return self.error(format!(
                "{} is not a defined function",
                crate::strconv::quote(name)
            ));
        };
        let args = args.get(1..).unwrap_or(&[]);
        let num_in = args.len() + usize::from(final_.is_some());
        if sig.variadic.is_some() {
            if num_in < sig.fixed.len() {
                return self.error(format!(
                    "wrong number of args for {name}: want at least {} got {}",
                    sig.fixed.len(),
                    args.len()
                ));
            }
        } else if num_in != sig.fixed.len() {
            return self.error(format!(
                "wrong number of args for {name}: want {} got {num_in}",
                sig.fixed.len()
            ));
        }
        let param = |i: usize| sig.fixed.get(i).copied().or(sig.variadic).unwrap_or(Param::Any);
        if name == "and" || name == "or" {
            let mut v = Value::Invalid;
            for a in args {
                v = self.eval_arg(dot, Some(Param::Value), a)?;
                if v.truth() == (name == "or") {
                    return Ok(v);
                }
            }
            if let Some(f) = final_ {
                v = f;
            }
            return Ok(v);
        }
        let mut argv = Vec::with_capacity(num_in);
        for (i, a) in args.iter().enumerate() {
            argv.push(self.eval_arg(dot, Some(param(i)), a)?);
        }
        if let Some(f) = final_ {
            argv.push(self.validate(f, Some(param(num_in - 1)))?);
        }
        let callee = match (name, args.first(), argv.first()) {
            ("call", Some(a), _) => a.to_string(),
            ("call", None, Some(Value::Str(s))) => s.clone(),
            ("call", None, Some(v)) => format!("<{} Value>", v.type_name()),
            _ => String::new(),
        };
        match self.call(name, argv, &callee) {
            Ok(v) => Ok(v),
            Err(e) => {
                if let Some(cmd) = cmd {
                    self.at(cmd.pos, cmd);
                }
                if e.starts_with("aviary:") {
                    return Err(Flow::Error(ExecError(e)));
                }
                self.error(format!("error calling {name}: {e}"))
            }
        }
    }

    /// Calls a function with converted arguments.
    fn call(&self, name: &str, argv: Vec<Value>, callee: &str) -> std::result::Result<Value, String> {
        let m = self.model;
        let s = |v: &String| Ok(Value::Str(v.clone()));
        match name {
            "name" => s(&m.name),
            "namespace" => s(&m.namespace),
            "target" => s(&m.target),
            "service" => s(&m.service),
            "ingress" => s(&m.ingress),
            "route" => s(&m.route),
            "interval" => s(&m.interval),
            "variables" => Ok(Value::Map(self.variables.clone())),
            "not" => Ok(Value::Bool(!argv[0].truth())),
            "len" => builtins::len(&argv[0]),
            "index" => builtins::index(&argv[0], &argv[1..]),
            "slice" => builtins::slice(&argv[0], &argv[1..]),
            "print" => Ok(Value::Str(sprint(&argv))),
            "println" => Ok(Value::Str(sprintln(&argv))),
            "printf" => {
                let Value::Str(format) = &argv[0] else {
                    unreachable!("validated as a string")
                };
                sprintf(format, &argv[1..]).map(Value::Str)
            }
            "html" => Ok(Value::Str(builtins::html(&builtins::eval_args(&argv)))),
            "js" => Ok(Value::Str(builtins::js(&builtins::eval_args(&argv)))),
            "urlquery" => Ok(Value::Str(builtins::urlquery(&builtins::eval_args(&argv)))),
            "eq" => builtins::eq(&argv[0], &argv[1..]).map(Value::Bool),
            "ne" => builtins::eq(&argv[0], &argv[1..2]).map(|b| Value::Bool(!b)),
            "lt" => builtins::lt(&argv[0], &argv[1]).map(Value::Bool),
            "le" => builtins::le(&argv[0], &argv[1]).map(Value::Bool),
            "gt" => builtins::le(&argv[0], &argv[1]).map(|b| Value::Bool(!b)),
            "ge" => builtins::lt(&argv[0], &argv[1]).map(|b| Value::Bool(!b)),
            "call" => match &argv[0] {
                Value::Invalid => Err("call of nil".into()),
                v => Err(format!("non-function {callee} of type {}", v.type_name())),
            },
            _ => unreachable!("signature() knows every function"),
        }
    }
}

/// Go's built-in functions over our values.
mod builtins {
    use crate::value::{Value, format_value, sprint};

    pub(super) fn len(v: &Value) -> Result<Value, String> {
        match v {
            Value::Str(s) => Ok(Value::Int(s.len() as i64)),
            Value::Map(m) => Ok(Value::Int(m.len() as i64)),
            Value::Invalid => Err("reflect: call of reflect.Value.Type on zero Value".into()),
            Value::Nil => Err("len of nil pointer".into()),
            v => Err(format!("len of type {}", v.type_name())),
        }
    }

    /// An index operand: an integer within `0..=cap`.
    fn index_arg(v: &Value, cap: usize) -> Result<usize, String> {
        let x = match v {
            Value::Int(i) => *i,
            Value::Uint8(u) => *u as i64,
            Value::Invalid | Value::Nil => return Err("cannot index slice/array with nil".into()),
            v => return Err(format!("cannot index slice/array with type {}", v.type_name())),
        };
        if x < 0 || x as u64 > cap as u64 {
            return Err(format!("index out of range: {x}"));
        }
        Ok(x as usize)
    }

    pub(super) fn index(item: &Value, indexes: &[Value]) -> Result<Value, String> {
        let mut item = item.clone();
        if matches!(item, Value::Invalid | Value::Nil) {
            return Err("index of untyped nil".into());
        }
        for i in indexes {
            item = match &item {
                Value::Str(s) => {
                    let x = index_arg(i, s.len())?;
                    match s.as_bytes().get(x) {
                        Some(b) => Value::Uint8(*b),
                        None => return Err("reflect: string index out of range".into()),
                    }
                }
                Value::Map(m) => match i {
                    Value::Str(k) => Value::Str(m.get(k).cloned().unwrap_or_default()),
                    Value::Invalid | Value::Nil => {
                        return Err("value is nil; should be of type string".into());
                    }
                    v => return Err(format!("value has type {}; should be string", v.type_name())),
                },
                v => return Err(format!("can't index item of type {}", v.type_name())),
            };
        }
        Ok(item)
    }

    pub(super) fn slice(item: &Value, indexes: &[Value]) -> Result<Value, String> {
        let s = match item {
            Value::Invalid | Value::Nil => return Err("slice of untyped nil".into()),
            Value::Str(s) => s,
            v if indexes.len() > 3 => {
                return Err(format!(
                    "too many slice indexes: {}",
                    indexes.len().max(v.truth() as usize)
                ));
            }
            v => return Err(format!("can't slice item of type {}", v.type_name())),
        };
        if indexes.len() > 3 {
            return Err(format!("too many slice indexes: {}", indexes.len()));
        }
        if indexes.len() == 3 {
            return Err("cannot 3-index slice a string".into());
        }
        let mut idx = [0, s.len()];
        for (n, i) in indexes.iter().enumerate() {
            idx[n] = index_arg(i, s.len())?;
        }
        if idx[0] > idx[1] {
            return Err(format!("invalid slice index: {} > {}", idx[0], idx[1]));
        }
        Ok(Value::Str(
            String::from_utf8_lossy(&s.as_bytes()[idx[0]..idx[1]]).into_owned(),
        ))
    }

    /// The text of `html`, `js` and `urlquery`'s arguments (nil prints as `<no value>`).
    pub(super) fn eval_args(args: &[Value]) -> String {
        if let [Value::Str(s)] = args {
            return s.clone();
        }
        let printable: Vec<Value> = args
            .iter()
            .map(|a| match a {
                Value::Nil | Value::Invalid => Value::Str("<no value>".into()),
                a => a.clone(),
            })
            .collect();
        sprint(&printable)
    }

    pub(super) fn html(s: &str) -> String {
        // `&` first: the other escapes contain one.
        s.replace('&', "&amp;")
            .replace('"', "&#34;")
            .replace('\'', "&#39;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('\0', "\u{FFFD}")
    }

    pub(super) fn js(s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        for c in s.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\'' => out.push_str("\\'"),
                '"' => out.push_str("\\\""),
                '<' => out.push_str("\\u003C"),
                '>' => out.push_str("\\u003E"),
                '&' => out.push_str("\\u0026"),
                '=' => out.push_str("\\u003D"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u00{:02X}", c as u32)),
                c if !c.is_ascii() && !crate::strconv::is_print(c) => {
                    out.push_str(&format!("\\u{:04X}", c as u32))
                }
                c => out.push(c),
            }
        }
        out
    }

    pub(super) fn urlquery(s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            match b {
                b' ' => out.push('+'),
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
                b => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    }

    /// Go's `basicKind` classes for comparisons.
    #[derive(PartialEq, Clone, Copy)]
    enum Kind {
        Bool,
        Complex,
        Int,
        Uint,
        Float,
        String,
    }

    fn kind(v: &Value) -> Option<Kind> {
        Some(match v {
            Value::Bool(_) => Kind::Bool,
            Value::Complex(..) => Kind::Complex,
            Value::Int(_) => Kind::Int,
            Value::Uint8(_) => Kind::Uint,
            Value::Float(_) => Kind::Float,
            Value::Str(_) => Kind::String,
            _ => return None,
        })
    }

    fn incompatible(a: &Value, b: &Value) -> String {
        format!(
            "incompatible types for comparison: {} and {}",
            a.type_name(),
            b.type_name()
        )
    }

    fn as_i64(v: &Value) -> i64 {
        match v {
            Value::Int(i) => *i,
            Value::Uint8(u) => *u as i64,
            _ => 0,
        }
    }

    pub(super) fn eq(a: &Value, others: &[Value]) -> Result<bool, String> {
        if others.is_empty() {
            return Err("missing argument for comparison".into());
        }
        let k1 = kind(a);
        for b in others {
            let k2 = kind(b);
            let truth = if k1 != k2 {
                match (k1, k2) {
                    (Some(Kind::Int), Some(Kind::Uint)) | (Some(Kind::Uint), Some(Kind::Int)) => {
                        as_i64(a) == as_i64(b)
                    }
                    _ if !matches!(a, Value::Invalid) && !matches!(b, Value::Invalid) => {
                        return Err(incompatible(a, b));
                    }
                    _ => false,
                }
            } else {
                match (a, b) {
                    // not basic kinds: nil equals nil; maps are not comparable
                    (Value::Invalid | Value::Nil, _) | (_, Value::Invalid | Value::Nil) => {
                        matches!(a, Value::Invalid | Value::Nil) && matches!(b, Value::Invalid | Value::Nil)
                    }
                    (Value::Map(_), _) => {
                        return Err(format!(
                            "non-comparable type {}: {}",
                            format_value(b),
                            b.type_name()
                        ));
                    }
                    (Value::Float(x), Value::Float(y)) => x == y,
                    (Value::Complex(x1, y1), Value::Complex(x2, y2)) => x1 == x2 && y1 == y2,
                    (a, b) => a == b,
                }
            };
            if truth {
                return Ok(true);
            }
        }
        Ok(false)
    }

    pub(super) fn lt(a: &Value, b: &Value) -> Result<bool, String> {
        let (Some(k1), Some(k2)) = (kind(a), kind(b)) else {
            return Err("invalid type for comparison".into());
        };
        if k1 != k2 {
            return match (k1, k2) {
                (Kind::Int, Kind::Uint) | (Kind::Uint, Kind::Int) => Ok(as_i64(a) < as_i64(b)),
                _ => Err(incompatible(a, b)),
            };
        }
        Ok(match (a, b) {
            (Value::Float(x), Value::Float(y)) => x < y,
            (Value::Str(x), Value::Str(y)) => x < y,
            (Value::Int(_) | Value::Uint8(_), _) => as_i64(a) < as_i64(b),
            _ => return Err("invalid type for comparison".into()),
        })
    }

    pub(super) fn le(a: &Value, b: &Value) -> Result<bool, String> {
        if lt(a, b)? {
            return Ok(true);
        }
        eq(a, std::slice::from_ref(b))
    }
}
