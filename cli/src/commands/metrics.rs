//! `metrics`: a Prometheus text endpoint. Every scrape reads the broker;
//! the command keeps no state, so any number of them can run.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use pillarbox::{Broker, GroupStats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::failure::{exit, Failure, Outcome};

pub async fn serve(broker: Arc<dyn Broker>, listen: &str, groups: Vec<(String, String)>) -> Outcome {
    let listener =
        TcpListener::bind(listen).await.map_err(|e| Failure::Usage(format!("cannot listen on {listen}: {e}")))?;
    let address = listener.local_addr()?;
    eprintln!("serving metrics of {} group(s) at http://{address}/metrics (Ctrl-C to stop)", groups.len());
    let groups = Arc::new(groups);
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut stop => return Ok(exit::OK),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
        };
        let (broker, groups) = (Arc::clone(&broker), Arc::clone(&groups));
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(30), answer(stream, &*broker, &groups)).await;
        });
    }
}

async fn answer(mut stream: TcpStream, broker: &dyn Broker, groups: &[(String, String)]) -> std::io::Result<()> {
    // The request line is all that matters; a bounded read of the head.
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let request = String::from_utf8_lossy(&head);
    let mut parts = request.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, content_type, body) = match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", render(broker, groups).await),
        ("GET", "/") => ("200 OK", "text/plain; charset=utf-8", "pillarbox metrics: see /metrics\n".to_string()),
        ("GET", _) => ("404 Not Found", "text/plain; charset=utf-8", "not found: see /metrics\n".to_string()),
        _ => ("405 Method Not Allowed", "text/plain; charset=utf-8", "GET only\n".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// A gauge: its name, its help text, its value for a group.
type Gauge = (&'static str, &'static str, fn(&GroupStats) -> Option<f64>);

/// The gauges, one family after the other as the format wants.
const GAUGES: &[Gauge] = &[
    ("pillarbox_ready_messages", "Messages ready to be received now.", |s| Some(s.ready as f64)),
    ("pillarbox_in_flight_messages", "Messages received and not yet settled.", |s| s.in_flight.map(|n| n as f64)),
    ("pillarbox_waiting_messages", "Delayed messages and retries waiting for their time.", |s| Some(s.waiting as f64)),
    ("pillarbox_dead_letters", "Messages in the group's dead letters.", |s| Some(s.dead_letters as f64)),
    ("pillarbox_depth_messages", "Ready, in flight and waiting together.", |s| {
        s.in_flight.map(|n| (s.ready + n + s.waiting) as f64)
    }),
    ("pillarbox_oldest_age_seconds", "Age of the oldest message not yet done.", |s| {
        Some(s.oldest_age.map_or(0.0, |d| d.as_secs_f64()))
    }),
];

pub async fn render(broker: &dyn Broker, groups: &[(String, String)]) -> String {
    let mut figures = Vec::with_capacity(groups.len());
    for (topic, group) in groups {
        figures.push((topic, group, broker.inspect(topic, group).await));
    }
    let mut out = String::new();
    let labels = |topic: &str, group: &str| format!("topic=\"{}\",group=\"{}\"", escape(topic), escape(group));
    let _ = writeln!(out, "# HELP pillarbox_up Whether the last read of the group's figures succeeded.");
    let _ = writeln!(out, "# TYPE pillarbox_up gauge");
    for (topic, group, stats) in &figures {
        let _ = writeln!(out, "pillarbox_up{{{}}} {}", labels(topic, group), u8::from(stats.is_ok()));
    }
    for (name, help, value) in GAUGES {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (topic, group, stats) in &figures {
            if let Some(v) = stats.as_ref().ok().and_then(value) {
                let _ = writeln!(out, "{name}{{{}}} {v}", labels(topic, group));
            }
        }
    }
    let partitioned = figures.iter().any(|(_, _, s)| s.as_ref().is_ok_and(|s| !s.partitions.is_empty()));
    if partitioned {
        let _ =
            writeln!(out, "# HELP pillarbox_partition_lag_messages Log end offset minus the group's committed offset.");
        let _ = writeln!(out, "# TYPE pillarbox_partition_lag_messages gauge");
        for (topic, group, stats) in &figures {
            for p in stats.as_ref().map(|s| s.partitions.as_slice()).unwrap_or_default() {
                let _ = writeln!(
                    out,
                    "pillarbox_partition_lag_messages{{{},partition=\"{}\"}} {}",
                    labels(topic, group),
                    p.partition,
                    p.lag.max(0)
                );
            }
        }
    }
    out
}

/// A label value as the text format wants it.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
