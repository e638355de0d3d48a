//! `publish`: one message, or one per line, from an argument, a file or standard input.

use std::io::{IsTerminal, Read};

use pillarbox::{Broker, Message};

use crate::failure::{exit, Failure, Outcome};
use crate::output::json as print_json;
use crate::Publish;

/// Lines are published in batches of this many.
const BATCH: usize = 100;

pub async fn run(broker: &dyn Broker, args: Publish, json: bool) -> Outcome {
    let input = read_input(&args)?;
    let payloads: Vec<Vec<u8>> = if args.lines {
        input
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
            .collect()
    } else {
        vec![input]
    };
    if args.lines && args.idempotency_key.is_some() && payloads.len() > 1 {
        return Err(Failure::Usage(
            "--idempotency-key with --lines would give every line the same key: only the first would be handled".into(),
        ));
    }
    let mut ids = Vec::with_capacity(payloads.len());
    let mut pending = Vec::with_capacity(BATCH);
    for payload in payloads {
        let m = message(&args, payload);
        ids.push(m.id.clone());
        pending.push(m);
        if pending.len() == BATCH {
            broker.publish(&args.topic, std::mem::take(&mut pending)).await?;
        }
    }
    if !pending.is_empty() {
        broker.publish(&args.topic, pending).await?;
    }
    if json {
        print_json(&ids)?;
    } else {
        for id in &ids {
            println!("{id}");
        }
    }
    Ok(exit::OK)
}

fn message(args: &Publish, payload: Vec<u8>) -> Message {
    let mut m = Message::new(payload);
    m.key = args.key.clone();
    m.idempotency_key = args.idempotency_key.clone();
    m.content_type = args.content_type.clone();
    m.headers = args.headers.iter().cloned().collect();
    if let Some(delay) = args.delay {
        m = m.with_delay(delay);
    }
    m
}

fn read_input(args: &Publish) -> Outcome<Vec<u8>> {
    if let Some(payload) = &args.payload {
        return Ok(payload.clone().into_bytes());
    }
    match args.file.as_deref() {
        Some("-") | None => {
            let stdin = std::io::stdin();
            if args.file.is_none() && stdin.is_terminal() {
                return Err(Failure::Usage(
                    "no payload: give it as an argument, with --file, or on standard input".into(),
                ));
            }
            let mut input = Vec::new();
            stdin.lock().read_to_end(&mut input)?;
            Ok(input)
        }
        Some(path) => std::fs::read(path).map_err(|e| Failure::Usage(format!("cannot read {path}: {e}"))),
    }
}
