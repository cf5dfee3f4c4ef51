//! Following a long-running operation (a deploy) as gcloud shows one: on a terminal, a line per phase
//! with a spinner while it runs and a check mark (and its time) once done; elsewhere plain lines as
//! phases start and end (and their detail, at most every few seconds), so CI logs show progress too;
//! nothing at all with `--quiet`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::Result;
use pier_model::operations::{OperationView, PhaseState};

use crate::Client;

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Show {
    /// Spinners and check marks (stderr is a terminal).
    Terminal,
    /// Plain lines.
    Lines,
    /// Nothing (`--quiet`).
    Quiet,
}

impl Show {
    /// The way for this process: quiet if asked, else by whether stderr is a terminal.
    pub fn detect(quiet: bool) -> Self {
        if quiet {
            Show::Quiet
        } else if std::io::stderr().is_terminal() {
            Show::Terminal
        } else {
            Show::Lines
        }
    }
}

/// Follows operation `name` until it ends, showing its phases; returns how it ended.
pub async fn follow(client: &Client, name: &str, show: Show) -> Result<OperationView> {
    let mut view = client.get_operation(name, None).await?;
    let mut shown = Shown::new(show);
    loop {
        shown.update(&view);
        if view.done {
            shown.finish(&view);
            return Ok(view);
        }
        view = client.get_operation(name, Some(view.version)).await?;
    }
}

struct Shown {
    show: Show,
    bars: Option<indicatif::MultiProgress>,
    lines: HashMap<String, indicatif::ProgressBar>,
    /// Per phase: the state last shown, the detail last printed, and when.
    seen: HashMap<String, (PhaseState, Option<String>, Instant)>,
}

/// Plain-line mode prints a phase's detail at most this often.
const DETAIL_EVERY: Duration = Duration::from_secs(5);

fn seconds(ms: Option<u64>) -> String {
    ms.map(|m| format!(" ({:.1} s)", m as f64 / 1000.0))
        .unwrap_or_default()
}

impl Shown {
    fn new(show: Show) -> Self {
        Self {
            show,
            bars: (show == Show::Terminal).then(indicatif::MultiProgress::new),
            lines: HashMap::new(),
            seen: HashMap::new(),
        }
    }

    fn update(&mut self, view: &OperationView) {
        for p in &view.metadata.phases {
            if p.state == PhaseState::Pending {
                continue;
            }
            let before = self.seen.get(&p.name).cloned();
            let changed_state = before.as_ref().map(|b| b.0) != Some(p.state);
            match self.show {
                Show::Quiet => {}
                Show::Terminal => {
                    let bars = self.bars.as_ref();
                    let bar = self.lines.entry(p.name.clone()).or_insert_with(|| {
                        let b = indicatif::ProgressBar::new_spinner();
                        let b = match bars {
                            Some(m) => m.add(b),
                            None => b,
                        };
                        b.set_style(
                            indicatif::ProgressStyle::with_template("  {spinner} {msg}")
                                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                        );
                        b.enable_steady_tick(Duration::from_millis(120));
                        b
                    });
                    let detail = p
                        .detail
                        .as_deref()
                        .map(|d| format!(": {d}"))
                        .unwrap_or_default();
                    match p.state {
                        PhaseState::Running => bar.set_message(format!("{}{detail}", p.name)),
                        PhaseState::Succeeded => bar.finish_with_message(format!(
                            "\u{2713} {}{}",
                            p.name,
                            seconds(p.millis)
                        )),
                        PhaseState::Failed => bar.finish_with_message(format!(
                            "\u{2717} {}{}",
                            p.name,
                            seconds(p.millis)
                        )),
                        PhaseState::Skipped | PhaseState::Pending => bar.finish_and_clear(),
                    }
                }
                Show::Lines => {
                    if changed_state {
                        match p.state {
                            PhaseState::Running => eprintln!("  {}...", p.name),
                            PhaseState::Succeeded => {
                                eprintln!("  {}: done{}", p.name, seconds(p.millis))
                            }
                            PhaseState::Failed => {
                                eprintln!("  {}: failed{}", p.name, seconds(p.millis))
                            }
                            PhaseState::Skipped | PhaseState::Pending => {}
                        }
                    } else if p.state == PhaseState::Running
                        && p.detail.is_some()
                        && p.detail != before.as_ref().and_then(|b| b.1.clone())
                        && before
                            .as_ref()
                            .is_none_or(|b| b.1.is_none() || b.2.elapsed() >= DETAIL_EVERY)
                    {
                        eprintln!("  {}: {}", p.name, p.detail.as_deref().unwrap_or(""));
                        self.seen
                            .insert(p.name.clone(), (p.state, p.detail.clone(), Instant::now()));
                        continue;
                    }
                }
            }
            if changed_state {
                self.seen
                    .insert(p.name.clone(), (p.state, p.detail.clone(), Instant::now()));
            }
        }
    }

    fn finish(&mut self, _view: &OperationView) {
        for bar in self.lines.values() {
            if !bar.is_finished() {
                bar.finish_and_clear();
            }
        }
    }
}
