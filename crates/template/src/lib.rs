//! Go's `text/template` for metric query templates, as Flagger renders them
//! (`template.New("tmpl").Option("missingkey=error").Funcs(model).Parse(query)`, executed with
//! no data).
//!
//! - [`lex`] and [`parse`]: Go's grammar, with Go's parse errors word for word (a differential
//!   test runs Go's own parser on the same corpus: tests/differential.rs).
//! - [`node`]: the parse tree.
//! - [`exec`] and [`value`]: execution with Flagger's functions (`name`, `namespace`, `target`,
//!   `service`, `ingress`, `route`, `interval`, `variables`) and Go's built-ins.
//! - [`strconv`]: Go's quoting and number syntax.

mod exec;
mod lex;
mod node;
mod parse;
mod strconv;
mod value;

use std::collections::BTreeMap;

pub use exec::Model;

/// The functions Flagger defines for query templates (MetricTemplateModel.TemplateFunctions):
/// all but `variables` return a string; `variables` returns the metric's templateVariables.
pub const FUNCTIONS: &[&str] = &[
    "name",
    "namespace",
    "target",
    "service",
    "ingress",
    "route",
    "interval",
    "variables",
];

/// A parse error, in Go's words (`template: tmpl:1: function "x" not defined`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// An execution error, in Go's words (`template: tmpl:1:3: executing "tmpl" at <…>: …`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExecError(pub String);

/// The name Flagger gives every query template.
pub const NAME: &str = "tmpl";

/// A parsed query template.
#[derive(Debug, Clone)]
pub struct Template {
    text: String,
    trees: node::Trees,
}

/// Parses a query template as Go's `text/template` does with Flagger's functions.
pub fn parse(text: &str) -> Result<Template, ParseError> {
    Ok(Template {
        text: text.to_string(),
        trees: parse::parse(NAME, text)?,
    })
}

impl Template {
    /// Executes the template with the model's values and no data (`{{ . }}` is nil), with
    /// `missingkey=error`.
    pub fn execute(&self, model: &Model) -> Result<String, ExecError> {
        exec::execute(&self.text, &self.trees, model)
    }
}

/// The variables of [`Model`].
pub type Variables = BTreeMap<String, String>;
