//! What the backend talks through: one server, or a Redis Cluster.
//!
//! `redis://host:port` is one server, reached through a `ConnectionManager`
//! (it reconnects). `redis+cluster://h1:p1,h2:p2` (`rediss+cluster://` with
//! TLS) is a Redis Cluster found from those seed nodes, through redis-rs's
//! cluster client. That client follows `MOVED` and `ASK`, refreshes its slot
//! map and retries on `CLUSTERDOWN`, `TRYAGAIN` and `READONLY` (a failover),
//! and loads a script again on a promoted replica that lacks it. Every key
//! of one topic shares the hash tag `{TOPIC}` (see the module's table), so
//! a topic's commands, pipelines and scripts go to one shard, and topics
//! spread over the shards.
//!
//! Blocking reads (`XREADGROUP BLOCK`) go through connections of their own,
//! so they never hold up the other commands.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisFuture, Value};

use super::options::{tls_certificates, Options};
use super::BACKEND;
use crate::error::{Error, Result};
use crate::url::BrokerUrl;

/// A connection to one server or to a cluster. Cheap to clone: clones share
/// the underlying connections.
#[derive(Clone)]
pub(crate) enum Conn {
    /// One server, reconnecting.
    Single(ConnectionManager),
    /// One server, for blocking reads.
    Direct(MultiplexedConnection),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Direct(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Direct(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Direct(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// What makes connections: a client of one server, or of a cluster. One
/// per broker handle, so the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Client {
    Single(redis::Client),
    Cluster(redis::cluster::ClusterClient),
}

/// The seed nodes of `redis+cluster://[user:password@]h1:p1,h2:p2[/]`, as
/// `host:port` (port 6379 when left out).
fn seed_nodes(url: &BrokerUrl) -> Result<Vec<String>> {
    let invalid = |reason: &str| Error::InvalidUrl { url: url.redacted(), reason: reason.into() };
    let (authority, rest) = url.path().split_once('/').unwrap_or((url.path(), ""));
    if !rest.is_empty() && rest != "0" {
        return Err(invalid("a Redis Cluster has only database 0"));
    }
    let hosts = authority.rsplit_once('@').map_or(authority, |(_, hosts)| hosts);
    let nodes: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| match h.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(h.to_string()),
            Some(_) => Err(invalid(&format!("`{h}` is not HOST:PORT"))),
            None => Ok(format!("{h}:6379")),
        })
        .collect::<Result<_>>()?;
    if nodes.is_empty() {
        return Err(invalid("no seed node: redis+cluster://HOST:PORT,HOST:PORT"));
    }
    Ok(nodes)
}

impl Client {
    /// The client for `url`, and the connection every non-blocking command uses.
    pub(crate) async fn connect(url: &BrokerUrl, options: &Options) -> Result<(Client, Conn)> {
        let connect_err =
            |e: redis::RedisError| Error::Connect { backend: BACKEND, url: url.redacted(), reason: e.to_string() };
        let invalid = |e: redis::RedisError| Error::InvalidUrl { url: url.redacted(), reason: e.to_string() };
        if url.scheme().ends_with("+cluster") {
            let tls = url.scheme().starts_with("rediss");
            let nodes: Vec<String> = seed_nodes(url)?
                .into_iter()
                .map(|n| format!("{}://{n}", if tls { "rediss" } else { "redis" }))
                .collect();
            let mut builder = ClusterClientBuilder::new(nodes)
                .connection_timeout(options.connect_timeout)
                .response_timeout(options.response_timeout);
            if let Some((user, password)) = url.credentials() {
                if let Some(password) = password {
                    builder = builder.password(password);
                }
                if !user.is_empty() {
                    builder = builder.username(user);
                }
            }
            if tls {
                builder = builder.tls(redis::TlsMode::Secure);
            }
            if let Some(certs) = tls_certificates(url)? {
                builder = builder.certs(certs);
            }
            let client = builder.build().map_err(invalid)?;
            let conn = client.get_async_connection().await.map_err(connect_err)?;
            return Ok((Client::Cluster(client), Conn::Cluster(conn)));
        }
        let mut parsed = url.as_url()?;
        parsed.set_query(None); // our options are not the client's
        let client = match tls_certificates(url)? {
            Some(certs) => redis::Client::build_with_tls(parsed.as_str(), certs).map_err(invalid)?,
            None => redis::Client::open(parsed.as_str()).map_err(invalid)?,
        };
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(options.response_timeout))
            .set_connection_timeout(Some(options.connect_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let conn = client.get_connection_manager_with_config(config).await.map_err(connect_err)?;
        Ok((Client::Single(client), Conn::Single(conn)))
    }

    /// A new connection for blocking reads, waiting up to `response_timeout`
    /// for an answer.
    pub(crate) async fn blocking(
        &self,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> redis::RedisResult<Conn> {
        match self {
            Client::Single(client) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(connect_timeout))
                    .set_response_timeout(Some(response_timeout));
                Ok(Conn::Direct(client.get_multiplexed_async_connection_with_config(&config).await?))
            }
            Client::Cluster(client) => {
                let config =
                    ClusterConfig::new().set_connection_timeout(connect_timeout).set_response_timeout(response_timeout);
                Ok(Conn::Cluster(client.get_async_connection_with_config(config).await?))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_nodes_are_read_from_the_url_and_checked() {
        let nodes = |u: &str| seed_nodes(&BrokerUrl::parse(u).unwrap());
        assert_eq!(nodes("redis+cluster://a:7001,b:7002/").unwrap(), vec!["a:7001", "b:7002"]);
        assert_eq!(nodes("redis+cluster://u:p@a,b:7002").unwrap(), vec!["a:6379", "b:7002"]);
        for bad in ["redis+cluster://a:7001/2", "redis+cluster://a:x", "redis+cluster:///", "redis+cluster://:7001"] {
            assert!(matches!(nodes(bad), Err(Error::InvalidUrl { .. })), "{bad}");
        }
    }
}
