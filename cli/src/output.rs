//! How figures are shown: tables for people, JSON for scripts.

use std::time::{Duration, SystemTime};

use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{CellAlignment, ContentArrangement, Table};
use serde::Serialize;

use crate::failure::Outcome;

/// A table with the given header; numeric columns are aligned right by `right`.
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY).set_content_arrangement(ContentArrangement::Dynamic).set_header(header);
    t
}

/// Aligns the given columns right (numbers).
pub fn align_right(t: &mut Table, columns: &[usize]) {
    for &c in columns {
        if let Some(column) = t.column_mut(c) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
}

/// Prints `value` as indented JSON on standard output.
pub fn json<T: Serialize + ?Sized>(value: &T) -> Outcome<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| crate::Failure::Io(e.to_string()))?;
    println!("{text}");
    Ok(())
}

/// `1.2s`, `3m 4s`, `2h 5m`: an age, to the second above a minute.
pub fn age(d: Option<Duration>) -> String {
    match d {
        None => "-".into(),
        Some(d) if d < Duration::from_secs(60) => format!("{:.1}s", d.as_secs_f64()),
        Some(d) => humantime::format_duration(Duration::from_secs(d.as_secs())).to_string(),
    }
}

/// A time as RFC 3339 UTC, to the second.
pub fn time(t: SystemTime) -> String {
    if t == SystemTime::UNIX_EPOCH {
        return "-".into();
    }
    humantime::format_rfc3339_seconds(t).to_string()
}

/// An optional number, `-` when unknown.
pub fn number<T: ToString>(n: Option<T>) -> String {
    n.map(|n| n.to_string()).unwrap_or_else(|| "-".into())
}

/// Seconds, for JSON (durations travel as seconds with fractions).
pub fn seconds(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64())
}
