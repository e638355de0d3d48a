//! `dead-letters list | show | redrive | purge`.

use std::io::{BufRead, IsTerminal, Write};

use indicatif::{ProgressBar, ProgressStyle};
use pillarbox::dead_letter::{self, redrive_reporting, DEAD_LETTER_PAGE};
use pillarbox::{Broker, DeadLetter, DeadLetterFilter, RedriveOptions};
use serde_json::json;

use super::known_group;
use crate::failure::{exit, Failure, Outcome};
use crate::filter;
use crate::output::{align_right, json as print_json, table, time};
use crate::DeadLetters;

pub async fn run(broker: &dyn Broker, command: DeadLetters, json: bool) -> Outcome {
    match command {
        DeadLetters::List { topic, group, limit, filter } => {
            let filter = filter::parse(&filter.filters)?;
            known_group(broker, &topic, &group).await?;
            let found = matching(broker, &topic, &group, &filter, limit).await?;
            list(&found, json)
        }
        DeadLetters::Show { topic, group, id } => {
            known_group(broker, &topic, &group).await?;
            let all = matching(broker, &topic, &group, &DeadLetterFilter::default(), usize::MAX).await?;
            let Some(d) = all.into_iter().find(|d| d.id == id || d.message.id == id) else {
                return Err(Failure::NotFound(format!("no dead letter `{id}` in group `{group}` on topic `{topic}`")));
            };
            show(&d, json)
        }
        DeadLetters::Redrive { topic, group, filter, rate, limit, dry_run } => {
            let filter = filter::parse(&filter.filters)?;
            known_group(broker, &topic, &group).await?;
            let selected = matching(broker, &topic, &group, &filter, limit.unwrap_or(usize::MAX)).await?.len();
            if dry_run {
                report(json, "would_redrive", selected, &format!("would redrive {selected} dead letter(s)"));
                return Ok(exit::OK);
            }
            let bar = progress(selected);
            let options = RedriveOptions { filter, per_second: rate, limit };
            let moved = redrive_reporting(broker, &topic, &group, &options, &mut |n| {
                if let Some(bar) = &bar {
                    bar.set_position(n as u64);
                }
            })
            .await?;
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            report(json, "redriven", moved, &format!("redrove {moved} dead letter(s) to group `{group}` on `{topic}`"));
            Ok(exit::OK)
        }
        DeadLetters::Purge { topic, group, filter, yes } => {
            let filter = filter::parse(&filter.filters)?;
            known_group(broker, &topic, &group).await?;
            if !yes {
                let selected = matching(broker, &topic, &group, &filter, usize::MAX).await?.len();
                if selected == 0 {
                    report(json, "purged", 0, "no dead letters to purge");
                    return Ok(exit::OK);
                }
                confirm(&format!(
                    "Delete {selected} dead letter(s) of group `{group}` on `{topic}`{}? [y/N] ",
                    if filter::is_empty(&filter) { "" } else { " matching the filter" }
                ))?;
            }
            let deleted = dead_letter::purge(broker, &topic, &group, &filter).await?;
            report(json, "purged", deleted, &format!("purged {deleted} dead letter(s)"));
            Ok(exit::OK)
        }
    }
}

/// Dead letters passing `filter`, oldest first, at most `limit`.
async fn matching(
    broker: &dyn Broker,
    topic: &str,
    group: &str,
    filter: &DeadLetterFilter,
    limit: usize,
) -> Outcome<Vec<DeadLetter>> {
    let mut found = Vec::new();
    let mut after: Option<String> = None;
    while found.len() < limit {
        let page = broker.list_dead_letters(topic, group, after.as_deref(), DEAD_LETTER_PAGE).await?;
        let full = page.len() == DEAD_LETTER_PAGE;
        after = page.last().map(|d| d.id.clone());
        found.extend(page.into_iter().filter(|d| filter.matches(d)));
        if !full {
            break;
        }
    }
    found.truncate(limit);
    Ok(found)
}

fn list(found: &[DeadLetter], json: bool) -> Outcome {
    if json {
        print_json(&found.iter().map(|d| dead_letter_json(d, false)).collect::<Vec<_>>())?;
        return Ok(exit::OK);
    }
    if found.is_empty() {
        println!("no dead letters");
        return Ok(exit::OK);
    }
    let mut t = table(&["ID", "MESSAGE", "KIND", "ERROR", "ATTEMPTS", "FIRST FAILURE", "LAST FAILURE", "CAUSE"]);
    for d in found {
        let r = &d.reason;
        t.add_row(vec![
            d.id.clone(),
            d.message.id.clone(),
            r.error_kind.clone(),
            shorten(&r.error_message, 60),
            r.attempts.to_string(),
            time(r.first_failed_at),
            time(r.last_failed_at),
            r.cause.clone(),
        ]);
    }
    align_right(&mut t, &[4]);
    println!("{t}");
    Ok(exit::OK)
}

fn show(d: &DeadLetter, json: bool) -> Outcome {
    if json {
        print_json(&dead_letter_json(d, true))?;
        return Ok(exit::OK);
    }
    let (m, r) = (&d.message, &d.reason);
    println!("dead letter   {}", d.id);
    println!("message       {}", m.id);
    println!("origin        topic `{}`, group `{}`", r.topic, r.group);
    println!("cause         {}", r.cause);
    println!("error         {}: {}", r.error_kind, r.error_message);
    println!("attempts      {}", r.attempts);
    println!("first failure {}", time(r.first_failed_at));
    println!("last failure  {}", time(r.last_failed_at));
    println!("published     {}", time(m.published_at));
    for (name, value) in [("key", &m.key), ("idempotency", &m.idempotency_key), ("content type", &m.content_type)] {
        if let Some(v) = value {
            println!("{name:<13} {v}");
        }
    }
    if !m.headers.is_empty() {
        println!("headers");
        for (k, v) in &m.headers {
            println!("  {k}: {v}");
        }
    }
    match std::str::from_utf8(&m.payload) {
        Ok(text) => println!("payload ({} bytes)\n{text}", m.payload.len()),
        Err(_) => println!("payload ({} bytes, not UTF-8)\n{}", m.payload.len(), hex(&m.payload)),
    }
    Ok(exit::OK)
}

/// A dead letter for scripts; with the payload (as text when it is UTF-8, else hex) when `payload`.
fn dead_letter_json(d: &DeadLetter, payload: bool) -> serde_json::Value {
    let m = &d.message;
    let mut v = json!({
        "id": d.id,
        "message_id": m.id,
        "reason": d.reason,
        "key": m.key,
        "idempotency_key": m.idempotency_key,
        "content_type": m.content_type,
        "headers": m.headers,
        "published_at": pillarbox::message::to_millis(m.published_at),
        "payload_bytes": m.payload.len(),
    });
    if payload {
        match std::str::from_utf8(&m.payload) {
            Ok(text) => v["payload_text"] = json!(text),
            Err(_) => v["payload_hex"] = json!(hex(&m.payload)),
        }
    }
    v
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn shorten(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or("");
    if line.chars().count() <= max && line.len() == text.len() {
        return line.to_string();
    }
    format!("{}…", line.chars().take(max.saturating_sub(1)).collect::<String>())
}

fn report(json: bool, field: &str, n: usize, text: &str) {
    if json {
        println!("{}", json!({ field: n }));
    } else {
        println!("{text}");
    }
}

/// A bar on a terminal; nothing for scripts.
fn progress(total: usize) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() || total == 0 {
        return None;
    }
    let bar = ProgressBar::new(total as u64);
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} redriven, {per_sec}, {eta} left") {
        bar.set_style(style);
    }
    Some(bar)
}

/// Asks on a terminal; refuses when nobody can answer.
fn confirm(question: &str) -> Outcome<()> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(Failure::Refused(
            "refusing to purge without confirmation: standard input is not a terminal; pass --yes".into(),
        ));
    }
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        Ok(())
    } else {
        Err(Failure::Refused("not confirmed: nothing purged".into()))
    }
}
