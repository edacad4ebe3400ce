//! `aviary events --agent URL`: an agent's recent events, like `kubectl describe`'s table.

use std::process::ExitCode;

use anyhow::Context;
use serde::Deserialize;

use super::rollout::{Output, print_structured};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The agent's admin address, e.g. http://127.0.0.1:8080.
    #[arg(long, env = "AVIARY_AGENT", value_name = "URL")]
    agent: String,

    /// Only this canary (`namespace/name`).
    #[arg(long, value_name = "NS/NAME")]
    canary: Option<String>,

    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    output: Output,
}

#[derive(Deserialize, serde::Serialize)]
struct Event {
    canary: String,
    #[serde(rename = "type")]
    kind: String,
    reason: String,
    message: String,
    timestamp: String,
}

/// GETs an agent admin endpoint (`what`, for messages) and parses its JSON.
pub(crate) fn agent_json<T: serde::de::DeserializeOwned>(url: &str, what: &str) -> anyhow::Result<T> {
    super::rollout::block_on(async {
        let resp = reqwest::get(url)
            .await
            .with_context(|| format!("cannot reach the agent at {url}"))?;
        let resp = resp
            .error_for_status()
            .with_context(|| format!("the agent at {url} answered with an error"))?;
        resp.json()
            .await
            .with_context(|| format!("the agent's {what} is not the expected JSON"))
    })
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut url = format!("{}/events", args.agent.trim_end_matches('/'));
    if let Some(c) = &args.canary {
        url.push_str(&format!("?canary={c}"));
    }
    let events: Vec<Event> = agent_json(&url, "/events")?;
    match args.output {
        o @ (Output::Json | Output::Yaml) => print_structured(o, &events)?,
        Output::Table => {
            super::out(format_args!(
                "{:<28} {:<8} {:<7} {:<20} MESSAGE",
                "TIME", "TYPE", "REASON", "CANARY"
            ));
            for e in &events {
                super::out(format_args!(
                    "{:<28} {:<8} {:<7} {:<20} {}",
                    seconds(&e.timestamp),
                    e.kind,
                    e.reason,
                    e.canary,
                    e.message
                ));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// An event time at second precision (`2026-01-02T03:04:05Z`); as given if it is not RFC 3339.
fn seconds(t: &str) -> String {
    t.parse::<jiff::Timestamp>()
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| t.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn event_times_are_shown_to_the_second() {
        assert_eq!(
            super::seconds("2026-12-06T10:52:09.123456789Z"),
            "2026-12-06T10:52:09Z"
        );
        assert_eq!(super::seconds("2026-12-06T10:52:09Z"), "2026-12-06T10:52:09Z");
        assert_eq!(super::seconds("yesterday"), "yesterday");
    }
}
