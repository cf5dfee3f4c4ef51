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
    println!("{} {} [{stream}] {}", e.timestamp, e.instance, e.message);
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
