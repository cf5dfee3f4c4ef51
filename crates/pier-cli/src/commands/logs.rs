//! `pier logs SERVICE`: instance output with timestamps and instance ids, the request log (`--type
//! requests`), or both; filtered by revision, instance, time and severity; `--follow` streams new lines.

use anyhow::{Result, anyhow};
use clap::Args;
use pier_model::ServiceName;
use pier_model::api::{LogEntry, LogStream};

use crate::{Ctx, Format};

/// Arguments of `pier logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Service name.
    pub service: String,
    /// Only this revision.
    #[arg(long)]
    pub revision: Option<String>,
    /// Only this instance.
    #[arg(long)]
    pub instance: Option<String>,
    /// How many of the newest lines.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Which logs: app (the instances' output), requests (one line per request), or all.
    #[arg(long = "type", default_value = "app", value_parser = ["app", "requests", "all"])]
    pub kind: String,
    /// Only lines since this long ago (30s, 10m, 2h, 1d) or this RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// Only lines of this severity or above (DEBUG, INFO, WARNING, ERROR, ...): an app's JSON lines
    /// carry theirs (Cloud Run's structured logging), stderr counts as ERROR, requests by status.
    #[arg(long)]
    pub severity: Option<String>,
    /// Keep printing new lines as they come.
    #[arg(long, short)]
    pub follow: bool,
}

fn print(format: Format, e: &LogEntry) {
    match format {
        Format::Json => {
            println!("{}", serde_json::to_string(e).unwrap_or_default());
            return;
        }
        Format::Value(field) => {
            let v = serde_json::to_value(e).unwrap_or_default();
            println!("{}", visible(&crate::output::field_text(&v, field)));
            return;
        }
        Format::Yaml => {
            // One YAML document per entry, so a follower's stream stays valid YAML.
            let v = serde_json::to_value(e).unwrap_or_default();
            print!("---\n{}", yaml_serde::to_string(&v).unwrap_or_default());
            return;
        }
        Format::Text => {}
    }
    let stream = match e.stream {
        LogStream::Stdout => "stdout",
        LogStream::Stderr => "stderr",
        LogStream::System => "pier",
        LogStream::Request => "request",
    };
    if let Some(r) = &e.http_request {
        let latency_ms = r
            .latency
            .trim_end_matches('s')
            .parse::<f64>()
            .map(|s| s * 1e3)
            .unwrap_or(0.0);
        println!(
            "{} {} [{stream}] {} {} {} {:.1}ms {}B{}",
            e.timestamp,
            if e.instance.is_empty() {
                "-"
            } else {
                &e.instance
            },
            r.request_method,
            visible(&r.request_url),
            r.status,
            latency_ms,
            r.response_size,
            if r.cache_hit { " (cache hit)" } else { "" }
        );
        return;
    }
    // A structured line shows its severity and message (Cloud Run's structured logging).
    let structured = e.structured();
    let (severity, message) = match &structured {
        Some(s) => (
            s.severity.map(|v| format!("{v} ")).unwrap_or_default(),
            s.message.as_deref().unwrap_or(&e.message),
        ),
        None => (String::new(), e.message.as_str()),
    };
    println!(
        "{} {} [{stream}] {severity}{}",
        e.timestamp,
        e.instance,
        visible(message)
    );
}

pub(crate) async fn run(ctx: &Ctx, args: LogsArgs) -> Result<()> {
    let service: ServiceName = args.service.parse().map_err(|e| anyhow!("{e}"))?;
    if let Some(s) = &args.severity {
        s.parse::<pier_model::logs::Severity>()
            .map_err(|e| anyhow!("--severity {e}"))?;
    }
    let mut query = vec![
        ("limit", args.limit.to_string()),
        ("type", args.kind.clone()),
    ];
    if let Some(s) = &args.since {
        query.push(("since", s.clone()));
    }
    if let Some(s) = &args.severity {
        query.push(("severity", s.clone()));
    }
    if let Some(r) = &args.revision {
        query.push(("revision", r.clone()));
    }
    if let Some(i) = &args.instance {
        query.push(("instance", i.clone()));
    }
    if args.follow {
        let format = ctx.format;
        ctx.client
            .follow_logs(&ctx.project, &service, &query, |e| print(format, &e))
            .await
    } else {
        let lines = ctx.client.logs(&ctx.project, &service, &query).await?;
        for e in &lines {
            print(ctx.format, e);
        }
        Ok(())
    }
}

/// An app's line as text a terminal shows but does not obey: control characters (escape sequences,
/// carriage returns, bells) become `\x1b`-style escapes, so a log cannot retitle, recolour or rewrite
/// the reader's terminal.
pub(crate) fn visible(line: &str) -> std::borrow::Cow<'_, str> {
    if !line.chars().any(|c| c.is_control() && c != '\t') {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len() + 8);
    for c in line.chars() {
        if c.is_control() && c != '\t' {
            out.push_str(&format!("\\x{:02x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod visible_tests {
    use super::visible;

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert_eq!(visible("plain\ttext"), "plain\ttext");
        assert_eq!(visible("\u{1b}]0;PWNED\u{7}red"), "\\x1b]0;PWNED\\x07red");
        assert_eq!(visible("a\rb\u{9b}c"), "a\\x0db\\x9bc");
    }
}
