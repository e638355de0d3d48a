//! The one figure AMQP 0-9-1 does not give: how many of a queue's messages
//! are delivered and not yet acked. RabbitMQ's management plugin serves it
//! over HTTP; a minimal HTTP/1.0 GET is all we need, so no HTTP client
//! dependency. The plugin refreshes its figures every
//! `collect_statistics_interval` (5 s by default), so this figure can lag.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::BACKEND;
use crate::error::{Error, Result};

/// Where the management API is, and how to authenticate.
#[derive(Clone)]
pub(super) struct Management {
    host: String,
    port: u16,
    authorization: String,
}

impl std::fmt::Debug for Management {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Management(http://{}:{})", self.host, self.port)
    }
}

impl Management {
    pub fn new(host: &str, port: u16, user: &str, password: &str) -> Self {
        Management { host: host.to_string(), port, authorization: base64(format!("{user}:{password}").as_bytes()) }
    }

    /// `messages_unacknowledged` of a queue.
    pub async fn unacked(&self, vhost: &str, queue: &str) -> Result<u64> {
        let path = format!("/api/queues/{}/{}", encode(vhost), encode(queue));
        let body = self.get(&path).await?;
        let v: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| Error::Backend { backend: BACKEND, reason: format!("management API answered badly: {e}") })?;
        Ok(v["messages_unacknowledged"].as_u64().unwrap_or(0))
    }

    /// The consumers of a queue: each one's tag and the unacked messages of
    /// its channel (a Pillarbox consumer has a channel of its own).
    pub async fn consumers(&self, vhost: &str, queue: &str) -> Result<Vec<(String, Option<u64>)>> {
        let path = format!("/api/queues/{}/{}", encode(vhost), encode(queue));
        let v = self.get_json(&path).await?;
        let mut found = Vec::new();
        for c in v["consumer_details"].as_array().into_iter().flatten() {
            let Some(tag) = c["consumer_tag"].as_str() else { continue };
            let unacked = match c["channel_details"]["name"].as_str() {
                Some(channel) => {
                    let v = self.get_json(&format!("/api/channels/{}", encode(channel))).await?;
                    v["messages_unacknowledged"].as_u64()
                }
                None => None,
            };
            found.push((tag.to_string(), unacked));
        }
        Ok(found)
    }

    async fn get_json(&self, path: &str) -> Result<serde_json::Value> {
        let body = self.get(path).await?;
        serde_json::from_str(&body)
            .map_err(|e| Error::Backend { backend: BACKEND, reason: format!("management API answered badly: {e}") })
    }

    /// Queues bound to an exchange.
    pub async fn bound_queues(&self, vhost: &str, exchange: &str) -> Result<Vec<String>> {
        let path = format!("/api/exchanges/{}/{}/bindings/source", encode(vhost), encode(exchange));
        let body = self.get(&path).await?;
        let v: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| Error::Backend { backend: BACKEND, reason: format!("management API answered badly: {e}") })?;
        Ok(v.as_array()
            .map(|bindings| {
                bindings
                    .iter()
                    .filter(|b| b["destination_type"] == "queue")
                    .filter_map(|b| b["destination"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn get(&self, path: &str) -> Result<String> {
        let unreachable = |e: std::io::Error| Error::Backend {
            backend: BACKEND,
            reason: format!(
                "the RabbitMQ management API at http://{}:{} is needed for in-flight counts: {e}",
                self.host, self.port
            ),
        };
        let exchange = async {
            let mut stream = TcpStream::connect((self.host.as_str(), self.port)).await?;
            let request = format!(
                "GET {path} HTTP/1.0\r\nHost: {}:{}\r\nAuthorization: Basic {}\r\nAccept: application/json\r\n\r\n",
                self.host, self.port, self.authorization
            );
            stream.write_all(request.as_bytes()).await?;
            let mut response = Vec::new();
            stream.read_to_end(&mut response).await?;
            Ok::<_, std::io::Error>(response)
        };
        let response = tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .map_err(|_| unreachable(std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out")))?
            .map_err(unreachable)?;
        let text = String::from_utf8_lossy(&response);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head.split_whitespace().nth(1).unwrap_or("");
        if status == "404" {
            return Ok("{}".into()); // no such queue yet: nothing in flight
        }
        if status != "200" {
            return Err(Error::Backend {
                backend: BACKEND,
                reason: format!("management API answered {status} for {path}"),
            });
        }
        Ok(body.to_string())
    }
}

fn encode(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes()).collect::<String>().replace('+', "%20")
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(super::base64(b"guest:guest"), "Z3Vlc3Q6Z3Vlc3Q=");
        assert_eq!(super::base64(b"ab"), "YWI=");
        assert_eq!(super::base64(b"abc"), "YWJj");
        assert_eq!(super::encode("/"), "%2F");
    }
}
