//! amqps:// against the test node's TLS listener (127.0.0.1:5674, a private
//! CA made by tests/brokers/start-rabbitmq.sh), and bad credentials.
#![cfg(feature = "amqp")]

mod support;

use std::time::Duration;

use pillarbox::{connect, Message};

fn ca() -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../.pillarbox-test/rabbitmq/tls/ca.pem")
        .display()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_with_a_private_ca() {
    let url = format!("amqps://guest:guest@127.0.0.1:5674/%2f?management_port=15673&tls_ca_file={}", ca());
    let broker = connect(&url).await.unwrap_or_else(|e| panic!("TLS connect failed: {e}"));
    let topic = format!("tls{}", std::process::id());
    broker.ensure_group(&topic, "g").await.unwrap();
    broker.publish(&topic, vec![Message::new("over TLS")]).await.unwrap();
    let got = support::receive(&*broker, &topic, "c", 1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].message.payload[..], b"over TLS");
    broker.ack(&got).await.unwrap();
    broker.close().await.unwrap();

    // The system trust store does not know the test CA.
    let untrusted = connect("amqps://guest:guest@127.0.0.1:5674/%2f").await.unwrap_err();
    assert_eq!(untrusted.code(), "CONNECT", "{untrusted}");
    // A TLS option on a plain URL is a clear option error.
    let e = connect(&format!("amqp://guest:guest@127.0.0.1:5673/%2f?tls_ca_file={}", ca())).await.unwrap_err();
    assert_eq!(e.code(), "INVALID_OPTION");
}

#[tokio::test]
async fn wrong_password_is_a_clear_error_without_the_password() {
    let e = connect("amqp://guest:not-the-pw-xyz@127.0.0.1:5673/%2f").await.unwrap_err();
    assert_eq!(e.code(), "CONNECT", "{e}");
    assert!(!e.to_string().contains("not-the-pw-xyz"), "{e}");
    let e = connect("amqp://guest:guest@127.0.0.1:1/%2f").await.unwrap_err();
    assert_eq!(e.code(), "CONNECT", "{e}");
    let e = connect("amqp://127.0.0.1:5673/%2f?bogus=1").await.unwrap_err();
    assert_eq!(e.code(), "INVALID_OPTION");
}
