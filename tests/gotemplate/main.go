// Command gotemplate is the oracle of aviary's Go text/template differential test
// (crates/template/tests/differential.rs): for each JSON line on stdin (a template string) it
// parses the template the way Flagger's RenderQuery does (pkg/metrics/observers/render.go:
// template.New("tmpl").Option("missingkey=error").Funcs(model functions).Parse) and executes it
// with a nil data object, and prints one JSON line with the parse error, or the output or the
// execution error.
//
// The model functions are those of Flagger's MetricTemplateModel, with fixed values the Rust
// side uses too.
package main

import (
	"bufio"
	"encoding/json"
	"os"
	"strings"
	"text/template"
)

type result struct {
	ParseError string  `json:"parseError,omitempty"`
	ExecError  string  `json:"execError,omitempty"`
	Output     *string `json:"output,omitempty"`
}

func funcs() template.FuncMap {
	variables := map[string]string{"cluster": "eu-1", "app": "podinfo", "empty": ""}
	value := func(s string) func() string { return func() string { return s } }
	return template.FuncMap{
		"name":      value("podinfo"),
		"namespace": value("test"),
		"target":    value("podinfo"),
		"service":   value("podinfo-svc"),
		"ingress":   value("podinfo-ing"),
		"route":     value("podinfo-00002"),
		"interval":  value("1m"),
		"variables": func() map[string]string { return variables },
	}
}

func run(text string) (res result) {
	t, err := template.New("tmpl").Option("missingkey=error").Funcs(funcs()).Parse(text)
	if err != nil {
		return result{ParseError: err.Error()}
	}
	defer func() {
		// text/template recovers its own panics; anything else is reported, not fatal.
		if r := recover(); r != nil {
			res = result{ExecError: "panic"}
		}
	}()
	var out strings.Builder
	if err := t.Execute(&out, nil); err != nil {
		return result{ExecError: err.Error()}
	}
	s := out.String()
	return result{Output: &s}
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<24)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	for in.Scan() {
		var text string
		if err := json.Unmarshal(in.Bytes(), &text); err != nil {
			panic(err)
		}
		if err := enc.Encode(run(text)); err != nil {
			panic(err)
		}
	}
	if err := in.Err(); err != nil {
		panic(err)
	}
}
