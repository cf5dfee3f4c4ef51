//! `pier logs SERVICE`: instance output with timestamps and instance ids; `--follow` streams new lines.

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
    /// Keep printing new lines as they come.
    #[arg(long, short)]
    pub follow: bool,
}

fn print(format: Format, e: &LogEntry) {
    if format == Format::Json {
        println!("{}", serde_json::to_string(e).unwrap_or_default());
        return;
    }
    let stream = match e.stream {
        LogStream::Stdout => "stdout",
        LogStream::Stderr => "stderr",
        LogStream::System => "pier",
    };
    println!(
        "{} {} [{stream}] {}",
        e.timestamp,
        e.instance,
        visible(&e.message)
    );
}

pub(crate) async fn run(ctx: &Ctx, args: LogsArgs) -> Result<()> {
    let service: ServiceName = args.service.parse().map_err(|e| anyhow!("{e}"))?;
    let mut query = vec![("limit", args.limit.to_string())];
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
