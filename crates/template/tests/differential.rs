//! Differential test against Go itself: tests/gotemplate (a small Go program) parses and runs
//! each template with Go's text/template exactly as Flagger's RenderQuery does, and our parser
//! and executor must agree: the same parse error text, else the same output or execution error.
//!
//! Inputs: tests/corpus.jsonl (Flagger's documented queries and hand-written edge cases, one
//! JSON string per line), then templates generated from a fixed seed (set AVIARY_TEMPLATE_SEED
//! and AVIARY_TEMPLATE_CASES to explore more). Needs `go` (1.26) on PATH.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

mod common;

use aviary_template::{Model, parse};

/// The model the oracle uses (tests/gotemplate/main.go).
fn model() -> Model {
    common::model(&[("cluster", "eu-1"), ("app", "podinfo"), ("empty", "")])
}

/// Builds the Go oracle (cached by Go's build cache outside the repository).
fn oracle() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/gotemplate");
    let bin = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gotemplate-oracle");
    let out = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(".")
        .current_dir(&dir)
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod")
        .output()
        .unwrap_or_else(|e| panic!("this test needs Go 1.26 on PATH to build tests/gotemplate: {e}"));
    assert!(
        out.status.success(),
        "go build tests/gotemplate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

/// Go's verdict on each template: `parseError`, `execError` or `output`.
fn run_go(templates: &[String]) -> Vec<serde_json::Value> {
    let mut child = Command::new(oracle())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run the Go oracle");
    let mut stdin = child.stdin.take().expect("stdin");
    let input: String = templates
        .iter()
        .map(|t| serde_json::to_string(t).expect("json") + "\n")
        .collect();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()).expect("write to the oracle"));
    let out = child.wait_with_output().expect("oracle output");
    writer.join().expect("writer thread");
    assert!(out.status.success(), "the Go oracle failed");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("oracle json"))
        .collect()
}

/// Our verdict, in the oracle's shape.
fn run_ours(template: &str) -> serde_json::Value {
    match parse(template) {
        Err(e) => serde_json::json!({"parseError": e.0}),
        Ok(t) => match t.execute(&model()) {
            Ok(out) => serde_json::json!({"output": out}),
            Err(e) => serde_json::json!({"execError": e.0}),
        },
    }
}

/// Execution differences we accept: aviary refuses some printf verbs, and stops recursion at
/// depth 1000 where Go stops at 100000.
fn accepted(ours: &serde_json::Value, go: &serde_json::Value) -> bool {
    let ours_exec = ours["execError"].as_str().unwrap_or("");
    let go_exec = go["execError"].as_str().unwrap_or("");
    ours_exec.starts_with("aviary: ")
        || (go_exec.contains("exceeded maximum template depth")
            && ours_exec.contains("exceeded maximum template depth"))
}

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

/// Token soup: mostly template syntax, so most cases are parse errors of every kind.
const FRAGMENTS: &[&str] = &[
    "{{",
    "}}",
    "{{- ",
    " -}}",
    " ",
    " ",
    "\n",
    "namespace",
    "variables",
    ".cluster",
    ".nope",
    ".app",
    "$x",
    "$",
    "$y",
    " := ",
    " = ",
    " | ",
    "(",
    ")",
    "\"s\"",
    "`r`",
    "1",
    "2.5",
    "-3",
    "'c'",
    "if ",
    "else ",
    "end",
    "range ",
    "with ",
    "define ",
    "template ",
    "block ",
    "break",
    "continue",
    "\"a\"",
    "eq ",
    "printf ",
    "\"%s\"",
    "len ",
    "index ",
    "nil",
    ".",
    "true",
    "x",
    "{{/*c*/}}",
    "/*",
    "*/",
    ",",
    "0x1f",
    "-",
    "#",
    "}",
    "{",
    "text",
    "not ",
    "and ",
    "or ",
    "print ",
    "1e3",
    "0i",
    "\"\\n\"",
    "interval",
    "target",
    "lt ",
    "slice ",
    "html ",
    "js ",
];

/// Mostly valid templates: text and actions with pipelines over the model.
fn pipeline(r: &mut Rng, depth: usize) -> String {
    const OPERANDS: &[&str] = &[
        "namespace",
        "name",
        "target",
        "variables.cluster",
        "variables.app",
        "variables.empty",
        "variables.nope",
        "interval",
        "\"a\"",
        "`raw`",
        "1",
        "0",
        "-2",
        "2.5",
        "true",
        "false",
        ".",
        "$",
        "'x'",
        "variables",
        "nil",
        "0x10",
        "1e2",
    ];
    const FUNCS: &[&str] = &[
        "print",
        "println",
        "len",
        "index variables",
        "eq",
        "ne",
        "lt",
        "le",
        "gt",
        "ge",
        "and",
        "or",
        "not",
        "html",
        "js",
        "urlquery",
        "printf \"%s\"",
        "printf \"%d\"",
        "printf \"%v-%v\"",
        "slice",
        "printf \"%q %x\"",
        "printf \"%.2f|%t\"",
        "printf \"%5d\"",
        "call",
    ];
    let cmd = |r: &mut Rng| -> String {
        if depth < 2 && r.below(6) == 0 {
            return format!("({})", pipeline(r, depth + 1));
        }
        if r.below(2) == 0 {
            return r.pick(OPERANDS).to_string();
        }
        let mut s = r.pick(FUNCS).to_string();
        for _ in 0..r.below(3) {
            s.push(' ');
            s.push_str(r.pick(OPERANDS));
        }
        s
    };
    let mut p = cmd(r);
    for _ in 0..r.below(2) {
        p.push_str(" | ");
        let mut s = r.pick(FUNCS).to_string();
        if r.below(2) == 0 {
            s.push(' ');
            s.push_str(r.pick(OPERANDS));
        }
        p.push_str(&s);
    }
    p
}

fn structured(r: &mut Rng) -> String {
    let mut t = String::new();
    for _ in 0..1 + r.below(4) {
        match r.below(9) {
            0 => t.push_str("sum(rate(x{ns=\""),
            1 => t.push_str("\"}[5m])) "),
            2 => t.push('\n'),
            3 => t.push_str(&format!(
                "{{{{ if {} }}}}A{{{{ else }}}}B{{{{ end }}}}",
                pipeline(r, 0)
            )),
            4 => t.push_str(&format!(
                "{{{{ with {} }}}}{{{{ . }}}}{{{{ end }}}}",
                pipeline(r, 0)
            )),
            5 => t.push_str(&format!(
                "{{{{ range $k, $v := {} }}}}{{{{ $k }}}}{{{{ end }}}}",
                pipeline(r, 0)
            )),
            6 => t.push_str(&format!("{{{{ $v := {} }}}}{{{{ $v }}}}", pipeline(r, 0))),
            _ => t.push_str(&format!("{{{{ {} }}}}", pipeline(r, 0))),
        }
    }
    t
}

fn generated(seed: u64, n: usize) -> Vec<String> {
    let mut r = Rng(seed.max(1));
    (0..n)
        .map(|i| {
            if i % 2 == 0 {
                structured(&mut r)
            } else {
                // an action's worth of tokens, often closed
                let mut t = String::from(r.pick(&["{{", "{{- ", "x{{", "{{ "]));
                t.extend((0..r.below(8)).map(|_| r.pick(FRAGMENTS)));
                if r.below(3) > 0 {
                    t.push_str(r.pick(&["}}", " -}}", "}}y"]));
                }
                t
            }
        })
        .collect()
}

fn corpus() -> Vec<String> {
    include_str!("corpus.jsonl")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("corpus lines are JSON strings"))
        .collect()
}

#[test]
fn parse_errors_and_results_match_go() {
    let seed = std::env::var("AVIARY_TEMPLATE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(17);
    let cases = std::env::var("AVIARY_TEMPLATE_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20000);
    let mut templates = corpus();
    templates.extend(generated(seed, cases));
    let go = run_go(&templates);
    assert_eq!(go.len(), templates.len());

    let mut mismatches = Vec::new();
    let (mut parse_errors, mut executed, mut accepted_differences) = (0, 0, 0);
    for (t, go) in templates.iter().zip(&go) {
        let ours = run_ours(t);
        if go.get("parseError").is_some() {
            parse_errors += 1;
        } else {
            executed += 1;
        }
        if ours == *go {
            continue;
        }
        if go.get("parseError").is_none() && ours.get("parseError").is_none() && accepted(&ours, go) {
            accepted_differences += 1;
            continue;
        }
        mismatches.push(format!("template {t:?}\n    go:   {go}\n    ours: {ours}"));
    }
    println!(
        "{} templates: {parse_errors} parse errors, {executed} parsed; {accepted_differences} accepted execution differences",
        templates.len()
    );
    assert!(
        mismatches.is_empty(),
        "{} of {} templates differ from Go:\n{}",
        mismatches.len(),
        templates.len(),
        mismatches.iter().take(25).cloned().collect::<Vec<_>>().join("\n")
    );
    // the generator must exercise both sides
    assert!(
        parse_errors > 500 && executed > 1000,
        "{parse_errors} parse errors, {executed} executed"
    );
}
