//! Printing results: aligned tables and descriptions for people, JSON or YAML for programs.

use std::fmt::Write as _;

use anyhow::Result;
use serde::Serialize;

use crate::Format;

/// Prints `value` as JSON or YAML when asked; returns false for text (the caller prints text itself).
pub fn structured<T: Serialize>(format: Format, value: &T) -> Result<bool> {
    match format {
        Format::Json => {
            println!("{}", serde_json::to_string_pretty(value)?);
            Ok(true)
        }
        Format::Yaml => {
            let json = serde_json::to_value(value)?;
            print!("{}", yaml_serde::to_string(&json)?);
            Ok(true)
        }
        Format::Value(field) => {
            let json = serde_json::to_value(value)?;
            let items: Vec<&serde_json::Value> = match &json {
                serde_json::Value::Array(a) => a.iter().collect(),
                v => vec![v],
            };
            for item in items {
                println!("{}", field_text(item, field));
            }
            Ok(true)
        }
        Format::Text => Ok(false),
    }
}

/// The text of one dotted field of a JSON value (gcloud's `value(...)`): a string as is, nothing when
/// missing, anything else as compact JSON (a list of strings joined with `;`, as gcloud joins them).
pub fn field_text(v: &serde_json::Value, field: &str) -> String {
    let mut cur = v;
    for part in field.split('.') {
        match cur.get(part) {
            Some(next) => cur = next,
            None => return String::new(),
        }
    }
    match cur {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        serde_json::Value::Array(a) if a.iter().all(|x| x.is_string()) => a
            .iter()
            .filter_map(|x| x.as_str())
            .collect::<Vec<_>>()
            .join(";"),
        other => other.to_string(),
    }
}

/// A spinner with `message` and the time spent, on stderr when it is a terminal; `None` elsewhere (the
/// caller then prints a line now and then, so CI logs show progress too).
pub fn spinner(message: &str) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal().then(|| {
        let s = indicatif::ProgressBar::new_spinner();
        s.set_style(
            indicatif::ProgressStyle::with_template("  {spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        s.set_message(message.to_owned());
        s.enable_steady_tick(std::time::Duration::from_millis(120));
        s
    })
}

/// Prints a note for the person at the terminal (on stderr: results stay alone on stdout).
pub fn note(message: &str) {
    eprintln!("{message}");
}

/// Prints a failed command's error: the reason on the first line, any detail indented below.
pub fn error(e: &anyhow::Error) {
    eprintln!("ERROR: {e:#}");
}

/// Prints the URLs `pier up` deployed.
pub fn service_urls(urls: &[(pier_model::ServiceName, String)]) {
    for (name, url) in urls {
        println!("Service [{name}] URL: {url}");
    }
}

/// An aligned table with a header row.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// An instance's unexpected end, for `describe`.
pub fn instance_exit(e: &pier_model::api::InstanceExitView) -> String {
    format!(
        "{} {} at {}{}",
        e.id,
        e.reason,
        e.at,
        if e.out_of_memory {
            " (out of memory: raise --memory)"
        } else {
            ""
        }
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn tables_align() {
        let t = super::table(&["A", "LONGER"], &[vec!["xx".into(), "y".into()]]);
        assert_eq!(t, "A   LONGER\nxx  y\n");
    }
}
