//! `connect(url)`: the URL's scheme picks the backend.

use std::sync::Arc;

use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::url::BrokerUrl;

/// Connects to the broker a URL names:
///
/// | URL | backend | cargo feature |
/// |---|---|---|
/// | `memory://` or `memory://NAME` | in-process | `embedded` (default) |
/// | `sqlite://PATH` | a local file, shared by processes | `embedded` (default) |
/// | `redis://`, `rediss://`, `redis+cluster://`, `redis+sentinel://` (and `rediss+`) | Redis streams (one server, a Redis Cluster, or Sentinel's primary) | `redis` |
/// | `amqp://`, `amqps://` | RabbitMQ | `amqp` |
/// | `kafka://host:port[,host:port]` | Kafka | `kafka` |
///
/// An unknown scheme, a backend not compiled in and a malformed URL are
/// clear errors; none of them shows the URL's credentials.
pub async fn connect(url: &str) -> Result<Arc<dyn Broker>> {
    let parsed = BrokerUrl::parse(url)?;
    let broker: Arc<dyn Broker> = match parsed.scheme() {
        #[cfg(feature = "embedded")]
        "memory" | "sqlite" => Arc::new(crate::backends::embedded::EmbeddedBroker::connect(&parsed).await?),
        #[cfg(not(feature = "embedded"))]
        scheme @ ("memory" | "sqlite") => not_enabled(scheme, "embedded")?,
        #[cfg(feature = "redis")]
        "redis" | "rediss" | "redis+cluster" | "rediss+cluster" | "redis+sentinel" | "rediss+sentinel" => {
            Arc::new(crate::backends::redis::RedisBroker::connect(&parsed).await?)
        }
        #[cfg(not(feature = "redis"))]
        scheme @ ("redis" | "rediss" | "redis+cluster" | "rediss+cluster" | "redis+sentinel" | "rediss+sentinel") => {
            not_enabled(scheme, "redis")?
        }
        #[cfg(feature = "amqp")]
        "amqp" | "amqps" => Arc::new(crate::backends::amqp::AmqpBroker::connect(&parsed).await?),
        #[cfg(not(feature = "amqp"))]
        scheme @ ("amqp" | "amqps") => not_enabled(scheme, "amqp")?,
        #[cfg(feature = "kafka")]
        "kafka" => Arc::new(crate::backends::kafka::KafkaBroker::connect(&parsed).await?),
        #[cfg(not(feature = "kafka"))]
        scheme @ "kafka" => not_enabled(scheme, "kafka")?,
        // Errors as values (`?`), not `return`: with no backend compiled in, every
        // arm is one, and a `return` in each left what follows unreachable.
        other => Err(Error::UnknownScheme { scheme: other.to_string() })?,
    };
    tracing::debug!(url = %parsed, backend = broker.backend(), "connected");
    Ok(broker)
}

#[allow(dead_code)]
fn not_enabled<T>(scheme: &str, feature: &'static str) -> Result<T> {
    Err(Error::BackendNotEnabled { scheme: scheme.to_string(), feature })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn scheme_errors_are_clear_and_redacted() {
        let e = connect("nats://u:secretpw@host").await.unwrap_err();
        assert_eq!(e.code(), "UNKNOWN_SCHEME");
        assert!(!e.to_string().contains("secretpw"));
        if !cfg!(feature = "kafka") {
            let e = connect("kafka://127.0.0.1:9092").await.unwrap_err();
            assert_eq!(e.code(), "BACKEND_NOT_ENABLED");
            assert!(e.to_string().contains("feature `kafka`"), "{e}");
        }
        if cfg!(feature = "embedded") {
            let e = connect("sqlite://").await.unwrap_err();
            assert_eq!(e.code(), "INVALID_URL");
            let e = connect("memory://?poll_ms=0").await.unwrap_err();
            assert_eq!(e.code(), "INVALID_OPTION");
            let e = connect("sqlite:///nonexistent-dir-pillarbox/x/y.db").await.unwrap_err();
            assert_eq!(e.code(), "CONNECT");
        } else {
            let e = connect("memory://").await.unwrap_err();
            assert_eq!(e.code(), "BACKEND_NOT_ENABLED");
            assert!(e.to_string().contains("feature `embedded`"), "{e}");
        }
    }
}
