//! `groups`, `inspect`, `lag` and `consumers`: what a group holds, from the broker.

use pillarbox::{Broker, GroupStats};
use serde_json::json;

use super::known_group;
use crate::failure::{exit, Failure, Outcome};
use crate::output::{age, align_right, json as print_json, number, seconds, table, time};

pub async fn groups(broker: &dyn Broker, topic: &str, json: bool) -> Outcome {
    let groups = broker.groups(topic).await?;
    if json {
        print_json(&groups)?;
    } else if groups.is_empty() {
        return Err(Failure::NotFound(format!(
            "topic `{topic}` has no groups: no such topic, or no worker has subscribed to it"
        )));
    } else {
        for g in &groups {
            println!("{g}");
        }
    }
    Ok(exit::OK)
}

pub async fn inspect(broker: &dyn Broker, topic: &str, group: Option<&str>, json: bool) -> Outcome {
    let groups = match group {
        Some(g) => {
            known_group(broker, topic, g).await?;
            vec![g.to_string()]
        }
        None => {
            let all = broker.groups(topic).await?;
            if all.is_empty() {
                return Err(Failure::NotFound(format!(
                    "topic `{topic}` has no groups: no such topic, or no worker has subscribed to it"
                )));
            }
            all
        }
    };
    let mut figures = Vec::with_capacity(groups.len());
    for g in &groups {
        figures.push(broker.inspect(topic, g).await?);
    }
    if json {
        print_json(&figures.iter().map(stats_json).collect::<Vec<_>>())?;
        return Ok(exit::OK);
    }
    let mut t = table(&["TOPIC", "GROUP", "READY", "IN FLIGHT", "WAITING", "DEAD LETTERS", "OLDEST"]);
    for s in &figures {
        t.add_row(vec![
            s.topic.clone(),
            s.group.clone(),
            s.ready.to_string(),
            number(s.in_flight),
            s.waiting.to_string(),
            s.dead_letters.to_string(),
            age(s.oldest_age),
        ]);
    }
    align_right(&mut t, &[2, 3, 4, 5, 6]);
    println!("{t}");
    Ok(exit::OK)
}

/// A group's figures as JSON: durations in seconds.
pub fn stats_json(s: &GroupStats) -> serde_json::Value {
    json!({
        "topic": s.topic,
        "group": s.group,
        "ready": s.ready,
        "in_flight": s.in_flight,
        "waiting": s.waiting,
        "dead_letters": s.dead_letters,
        "oldest_age_seconds": seconds(s.oldest_age),
        "partitions": s.partitions,
    })
}

/// Laid out as `kafka-consumer-groups --describe` lays it out.
pub async fn lag(broker: &dyn Broker, topic: &str, group: &str, json: bool) -> Outcome {
    known_group(broker, topic, group).await?;
    let s = broker.inspect(topic, group).await?;
    let rows: Vec<(String, Option<i64>, Option<i64>, u64)> = if s.partitions.is_empty() {
        // No partitions: the group's backlog is its lag.
        vec![("-".into(), None, None, s.ready + s.in_flight.unwrap_or(0) + s.waiting)]
    } else {
        s.partitions.iter().map(|p| (p.partition.to_string(), p.committed, Some(p.end), p.lag.max(0) as u64)).collect()
    };
    if json {
        let rows: Vec<_> = rows
            .iter()
            .map(|(p, committed, end, lag)| {
                json!({"topic": topic, "group": group, "partition": p.parse::<i32>().ok(),
                       "current_offset": committed, "log_end_offset": end, "lag": lag})
            })
            .collect();
        print_json(&rows)?;
        return Ok(exit::OK);
    }
    let mut t = table(&["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG"]);
    for (p, committed, end, lag) in rows {
        t.add_row(vec![group.to_string(), topic.to_string(), p, number(committed), number(end), lag.to_string()]);
    }
    align_right(&mut t, &[2, 3, 4, 5]);
    println!("{t}");
    Ok(exit::OK)
}

/// What `celery inspect active` answers: who holds what, since when.
pub async fn consumers(broker: &dyn Broker, topic: &str, group: &str, json: bool) -> Outcome {
    known_group(broker, topic, group).await?;
    let consumers = broker.consumers(topic, group).await?;
    if json {
        let rows: Vec<_> = consumers
            .iter()
            .map(|c| {
                json!({"name": c.name, "holding": c.holding, "holding_since": c.holding_since.map(pillarbox::message::to_millis),
                       "idle_seconds": seconds(c.idle), "partitions": c.partitions})
            })
            .collect();
        print_json(&rows)?;
        return Ok(exit::OK);
    }
    if consumers.is_empty() {
        println!("no consumers in group `{group}` on topic `{topic}`");
        return Ok(exit::OK);
    }
    let mut t = table(&["CONSUMER", "HOLDING", "SINCE", "IDLE", "PARTITIONS"]);
    for c in &consumers {
        let partitions = if c.partitions.is_empty() {
            "-".to_string()
        } else {
            c.partitions.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(",")
        };
        t.add_row(vec![
            c.name.clone(),
            number(c.holding),
            c.holding_since.map(time).unwrap_or_else(|| "-".into()),
            age(c.idle),
            partitions,
        ]);
    }
    align_right(&mut t, &[1]);
    println!("{t}");
    Ok(exit::OK)
}
