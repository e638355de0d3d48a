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
//! `redis+sentinel://s1:26379,s2:26379/NAME[/DB]` is the primary that
//! Redis Sentinel names NAME: the sentinels are asked for it when
//! connecting, and again when the primary stops answering or answers as a
//! replica (`READONLY`, `UNBLOCKED`: it was demoted), so that a failover
//! moves every connection to the new primary. (redis-rs's Sentinel client
//! asks only when it connects.)
//!
//! Blocking reads (`XREADGROUP BLOCK`) go through connections of their own,
//! so they never hold up the other commands.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisConnectionInfo, RedisError, RedisFuture, Value};

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
    /// The primary Redis Sentinel names.
    Sentinel(SentinelConn),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Direct(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Sentinel(c) => Box::pin(c.command(cmd)),
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
            Conn::Sentinel(c) => Box::pin(c.pipeline(pipeline, offset, count)),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Direct(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Sentinel(c) => c.shared.db,
        }
    }
}

/// The sentinels, and the connection to the primary they last named.
struct SentinelShared {
    sentinels: tokio::sync::Mutex<SentinelClient>,
    primary: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    config: AsyncConnectionConfig,
    db: i64,
}

/// A connection to the primary Redis Sentinel names, found again after a
/// failover. Clones share it.
#[derive(Clone)]
pub(crate) struct SentinelConn {
    shared: Arc<SentinelShared>,
}

/// Errors after which the sentinels are asked for the primary again: it is
/// gone, or it is a replica now.
fn primary_lost(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(e.code(), Some("READONLY" | "UNBLOCKED" | "MASTERDOWN" | "LOADING"))
}

impl SentinelConn {
    /// A connection to the primary the sentinels name now, with `config`.
    async fn dial(
        shared: &SentinelShared,
        config: &AsyncConnectionConfig,
    ) -> redis::RedisResult<MultiplexedConnection> {
        let client = shared.sentinels.lock().await.async_get_client().await?;
        client.get_multiplexed_async_connection_with_config(config).await
    }

    async fn current(&self) -> redis::RedisResult<MultiplexedConnection> {
        let mut primary = self.shared.primary.lock().await;
        if let Some(conn) = primary.as_ref() {
            return Ok(conn.clone());
        }
        let conn = Self::dial(&self.shared, &self.shared.config).await?;
        *primary = Some(conn.clone());
        Ok(conn)
    }

    async fn forget(&self) {
        *self.shared.primary.lock().await = None;
    }

    /// Runs `run` on the primary; when the primary was lost, once more on
    /// the one the sentinels name now. (A write whose answer was lost may
    /// then be applied twice: at least once, as everywhere.)
    async fn retried<T, F>(&self, run: impl Fn(MultiplexedConnection) -> F) -> redis::RedisResult<T>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        match run(self.current().await?).await {
            Err(e) if primary_lost(&e) => {
                self.forget().await;
                run(self.current().await?).await
            }
            done => done,
        }
    }

    async fn command(&self, cmd: &Cmd) -> redis::RedisResult<Value> {
        self.retried(|mut c| async move { c.req_packed_command(cmd).await }).await
    }

    async fn pipeline(&self, pipeline: &Pipeline, offset: usize, count: usize) -> redis::RedisResult<Vec<Value>> {
        self.retried(|mut c| async move { c.req_packed_commands(pipeline, offset, count).await }).await
    }
}

/// What makes connections: a client of one server, of a cluster, or of
/// the primary the sentinels name. One per broker handle, so the variants'
/// sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Client {
    Single(redis::Client),
    Cluster(redis::cluster::ClusterClient),
    Sentinel(SentinelConn),
}

/// The seed nodes of `redis+cluster://[user:password@]h1:p1,h2:p2[/]`, as
/// `host:port` (port 6379 when left out).
fn seed_nodes(url: &BrokerUrl) -> Result<Vec<String>> {
    let invalid = |reason: &str| Error::InvalidUrl { url: url.redacted(), reason: reason.into() };
    let (authority, rest) = url.path().split_once('/').unwrap_or((url.path(), ""));
    if !rest.is_empty() && rest != "0" {
        return Err(invalid("a Redis Cluster has only database 0"));
    }
    host_list(url, authority, 6379)
}

/// The sentinels, the primary's name and the database of
/// `redis+sentinel://[user:password@]s1:p1,s2:p2/NAME[/DB]`.
fn sentinel_parts(url: &BrokerUrl) -> Result<(Vec<String>, String, i64)> {
    let invalid = |reason: &str| Error::InvalidUrl { url: url.redacted(), reason: reason.into() };
    let mut parts = url.path().split('/');
    let authority = parts.next().unwrap_or_default();
    let name = parts.next().unwrap_or_default();
    if name.is_empty() {
        return Err(invalid("no primary name: redis+sentinel://HOST:PORT,HOST:PORT/NAME"));
    }
    let db = match parts.next().filter(|d| !d.is_empty()) {
        Some(d) => d.parse().map_err(|_| invalid(&format!("`{d}` is not a database number")))?,
        None => 0,
    };
    Ok((host_list(url, authority, 26379)?, name.to_string(), db))
}

/// `h1:p1,h2:p2` (after any `user:password@`) as `host:port`s, `port` when
/// one is left out.
fn host_list(url: &BrokerUrl, authority: &str, port: u16) -> Result<Vec<String>> {
    let invalid = |reason: &str| Error::InvalidUrl { url: url.redacted(), reason: reason.into() };
    let hosts = authority.rsplit_once('@').map_or(authority, |(_, hosts)| hosts);
    let nodes: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| match h.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(h.to_string()),
            Some(_) => Err(invalid(&format!("`{h}` is not HOST:PORT"))),
            None => Ok(format!("{h}:{port}")),
        })
        .collect::<Result<_>>()?;
    if nodes.is_empty() {
        return Err(invalid("no node: SCHEME://HOST:PORT,HOST:PORT"));
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
        if url.scheme().ends_with("+sentinel") {
            let tls = url.scheme().starts_with("rediss");
            let (sentinels, name, db) = sentinel_parts(url)?;
            // The sentinels themselves are reached in the clear (the usual setup).
            let sentinels: Vec<String> = sentinels.into_iter().map(|s| format!("redis://{s}")).collect();
            let mut redis_info = RedisConnectionInfo::default().set_db(db);
            if let Some((user, password)) = url.credentials() {
                if let Some(password) = password {
                    redis_info = redis_info.set_password(password);
                }
                if !user.is_empty() {
                    redis_info = redis_info.set_username(user);
                }
            }
            let mut node = SentinelNodeConnectionInfo::default().set_redis_connection_info(redis_info);
            if tls {
                node = node.set_tls_mode(redis::TlsMode::Secure);
            }
            let client =
                SentinelClient::build(sentinels, name, Some(node), SentinelServerType::Master).map_err(invalid)?;
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(options.connect_timeout))
                .set_response_timeout(Some(options.response_timeout));
            let shared = SentinelShared {
                sentinels: tokio::sync::Mutex::new(client),
                primary: tokio::sync::Mutex::new(None),
                config,
                db,
            };
            let conn = SentinelConn { shared: Arc::new(shared) };
            conn.current().await.map_err(connect_err)?;
            return Ok((Client::Sentinel(conn.clone()), Conn::Sentinel(conn)));
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
            Client::Sentinel(sentinel) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(connect_timeout))
                    .set_response_timeout(Some(response_timeout));
                Ok(Conn::Direct(SentinelConn::dial(&sentinel.shared, &config).await?))
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

    #[test]
    fn sentinel_urls_name_the_sentinels_the_primary_and_the_database() {
        let parts = |u: &str| sentinel_parts(&BrokerUrl::parse(u).unwrap());
        assert_eq!(
            parts("redis+sentinel://u:p@s1,s2:26380/mymaster/2").unwrap(),
            (vec!["s1:26379".to_string(), "s2:26380".to_string()], "mymaster".to_string(), 2)
        );
        assert_eq!(parts("redis+sentinel://s1:26379/mymaster").unwrap().2, 0);
        for bad in ["redis+sentinel://s1:26379", "redis+sentinel://s1:26379/", "redis+sentinel://s1/m/x"] {
            assert!(matches!(parts(bad), Err(Error::InvalidUrl { .. })), "{bad}");
        }
    }
}
