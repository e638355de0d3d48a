//! RabbitMQ-specific behaviour beyond the conformance suite, against the
//! test node (tests/brokers/start-rabbitmq.sh).
#![cfg(feature = "amqp")]

mod support;

use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use pillarbox::{connect, Message};

const URL: &str = "amqp://guest:guest@127.0.0.1:5673/%2f?management_port=15673";

/// Calls the broker answers by closing a channel (a purge of a queue that
/// does not exist, a declaration that conflicts with an existing queue)
/// leave the connection, and the deliveries held on it, alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_errors_do_not_drop_held_deliveries() {
    let broker = connect(URL).await.unwrap();
    let topic = format!("chanerr{}", std::process::id());
    broker.ensure_group(&topic, "g").await.unwrap();
    broker.publish(&topic, vec![Message::new("held")]).await.unwrap();
    let held = support::receive(&*broker, &topic, "c", 1, Duration::from_secs(10)).await;
    assert_eq!(held.len(), 1);

    // Nothing to purge for a group that does not exist.
    assert_eq!(broker.purge_dead_letters(&topic, "no-such-group", None).await.unwrap(), 0);

    // A queue made elsewhere as a classic queue: declaring it as a group
    // (a quorum queue) is refused, clearly.
    let raw = lapin::Connection::connect(URL.split('?').next().unwrap(), Default::default()).await.unwrap();
    let channel = raw.create_channel().await.unwrap();
    let conflicting = format!("{topic}.taken");
    channel
        .queue_declare(
            conflicting.as_str().into(),
            QueueDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let refused = broker.ensure_group(&topic, "taken").await.unwrap_err();
    assert_eq!(refused.code(), "BACKEND", "{refused}");

    // The handle still works, and the held delivery is still ours to settle.
    broker.ensure_group(&topic, "other").await.unwrap();
    broker.publish(&topic, vec![Message::new("after")]).await.unwrap();
    broker.ack(&held).await.unwrap();
    let _ = raw.close(200, "done".into()).await;
}

/// A group that was never made (an admin page listing a project's topics
/// before any worker ran) inspects as empty, with one probe of its main
/// queue rather than one per queue a group has, and leaves the handle working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_never_made_inspects_as_empty() {
    let broker = connect(URL).await.unwrap();
    let topic = format!("nogroup{}", std::process::id());
    let stats = broker.inspect(&topic, "never").await.unwrap();
    assert_eq!((stats.ready, stats.waiting, stats.dead_letters, stats.in_flight), (0, 0, 0, Some(0)));
    broker.ensure_group(&topic, "g").await.unwrap();
    broker.publish(&topic, vec![Message::new("x")]).await.unwrap();
    broker.inspect(&topic, "g").await.unwrap();
}

/// The id travels as AMQP's message-id property, a short string; an id
/// longer than its 255 bytes travels as a header instead, and both arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_of_every_length_arrive() {
    let broker = connect(URL).await.unwrap();
    let topic = format!("ids{}", std::process::id());
    broker.ensure_group(&topic, "g").await.unwrap();
    let short = Message::new("short");
    let mut long = Message::new("long");
    long.id = "x".repeat(300);
    broker.publish(&topic, vec![short.clone(), long.clone()]).await.unwrap();
    let got = support::receive_n(&*broker, &topic, "c", 2, Duration::from_secs(10)).await;
    let ids: Vec<&str> = got.iter().map(|d| d.message.id.as_str()).collect();
    assert_eq!(ids, [short.id.as_str(), long.id.as_str()]);
    assert_eq!(got[0].message.published_at, short.published_at, "carried by the id");
    assert_eq!(got[1].message.published_at, long.published_at, "carried by its header");
    broker.ack(&got).await.unwrap();
}

/// A PUT to the test node's management API, as its administrator (guest).
async fn management_put(path: &str, body: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect("127.0.0.1:15673").await.unwrap();
    // "guest:guest", base64.
    let request = format!(
        "PUT {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response.split_whitespace().nth(1).unwrap_or("");
    assert!(status == "201" || status == "204", "PUT {path}: {response}");
}

/// A user whose password has `+`, `&` and `=` connects and inspects (the
/// management API needs the same credentials) whether the URL writes the
/// password as it is or percent-encoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_with_reserved_characters_work_raw_and_percent_encoded() {
    let user = "pb-special";
    let password = "p+ss&w=rd";
    let body = format!(r#"{{"password":"{password}","tags":"management"}}"#);
    management_put(&format!("/api/users/{user}"), &body).await;
    management_put(&format!("/api/permissions/%2F/{user}"), r#"{"configure":".*","write":".*","read":".*"}"#).await;
    for (n, written) in [password, "p%2Bss%26w%3Drd"].into_iter().enumerate() {
        let url = format!("amqp://{user}:{written}@127.0.0.1:5673/%2f?management_port=15673");
        let broker = connect(&url).await.unwrap_or_else(|e| panic!("{written}: {e}"));
        let topic = format!("special{}.{n}", std::process::id());
        broker.ensure_group(&topic, "g").await.unwrap();
        broker.publish(&topic, vec![Message::new("x")]).await.unwrap();
        let stats = broker.inspect(&topic, "g").await.unwrap_or_else(|e| panic!("inspect with {written}: {e}"));
        assert_eq!(stats.ready + stats.in_flight.unwrap_or(0), 1, "{stats:?}");
        broker.close().await.unwrap();
    }
}

/// Without the management plugin (here: a port nothing listens on), the
/// figures AMQP gives are still there and in flight is unknown, not 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_without_the_management_plugin_gives_the_rest() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("amqp://guest:guest@127.0.0.1:5673/%2f?management_port={closed}");
    let broker = connect(&url).await.unwrap();
    let topic = format!("nomgmt{}", std::process::id());
    broker.ensure_group(&topic, "g").await.unwrap();
    broker.publish(&topic, vec![Message::new("a"), Message::new("b")]).await.unwrap();
    let delayed = Message::new("later").with_delay(Duration::from_secs(60));
    broker.publish(&topic, vec![delayed]).await.unwrap();
    // Publishes are confirmed once queued: the depths are exact at once.
    let stats = broker.inspect(&topic, "g").await.unwrap();
    assert_eq!((stats.ready, stats.waiting, stats.dead_letters), (2, 1, 0), "{stats:?}");
    assert_eq!(stats.in_flight, None, "{stats:?}");
    broker.close().await.unwrap();
}

/// A URL naming several nodes connects to the first that answers: here the
/// first refuses (nothing listens on port 1), the second is the test node.
/// When none answers, the error names each node's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_of_several_nodes_connects_to_one_that_answers() {
    let url = "amqp://guest:guest@127.0.0.1:1,127.0.0.1:5673/%2f?management_port=15673";
    let broker = connect(url).await.unwrap();
    let topic = format!("nodes{}", std::process::id());
    broker.ensure_group(&topic, "g").await.unwrap();
    broker.publish(&topic, vec![Message::new("through the second node")]).await.unwrap();
    let got = support::receive_n(broker.as_ref(), &topic, "c", 1, Duration::from_secs(20)).await;
    assert_eq!(&got[0].message.payload[..], b"through the second node");
    broker.ack(&got).await.unwrap();
    match connect("amqp://guest:secret@127.0.0.1:1,127.0.0.1:2/%2f").await {
        Err(pillarbox::Error::Connect { reason, url, .. }) => {
            assert!(reason.contains("node 1:") && reason.contains("node 2:"), "{reason}");
            assert!(!url.contains("secret"), "{url}");
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
}
