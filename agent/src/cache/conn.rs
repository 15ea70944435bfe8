//! Connections to a Redis server or cluster, built from a request's target and reused
//! across requests (a multiplexed connection manager per server, a cluster connection per
//! cluster), bounded in number and closed when idle. Commands are addressed to the server, or for a cluster to one master.

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, IntoConnectionInfo, Pipeline, RedisConnectionInfo, TlsCertificates,
    Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection},
    cluster_async::ClusterConnection,
    cluster_routing::{RoutingInfo, SingleNodeRoutingInfo},
};

use crate::api::RedisTarget;

/// Why Redis work failed; the message never contains the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// Bad input (400).
    #[error("{0}")]
    Invalid(String),
    /// The server could not be reached.
    #[error("{0}")]
    Connect(String),
    /// The server refused the credentials.
    #[error("{0}")]
    Auth(String),
    /// A command failed.
    #[error("{0}")]
    Command(String),
    /// A bound of the agent is reached; retry later.
    #[error("{0}")]
    Busy(String),
    /// The server's TLS certificate was refused: why, and what was said.
    #[error("{message}")]
    Certificate {
        /// What was wrong with it.
        refusal: CertificateRefusal,
        /// For people.
        message: String,
    },
}

/// Why a Redis server's TLS certificate was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateRefusal {
    /// It does not chain to a trusted authority, or is not valid as a certificate (expired,
    /// bad signature, revoked…).
    Untrusted,
    /// It is not valid for the name verified.
    WrongName,
}

impl CertificateRefusal {
    /// Why rustls refused a handshake, when it was the server's certificate.
    fn of(error: &rustls::Error) -> Option<Self> {
        use rustls::CertificateError as C;
        match error {
            rustls::Error::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
                Some(Self::WrongName)
            }
            rustls::Error::InvalidCertificate(_) => Some(Self::Untrusted),
            _ => None,
        }
    }

    /// The refusal a failed dial carries, found in its cause: rustls's error inside the I/O
    /// error the TLS stream failed with.
    fn in_error(e: &redis::RedisError) -> Option<Self> {
        type Shared = Arc<dyn std::error::Error + Send + Sync>;
        // The crate keeps its cause behind an `Arc`, which is what `source` hands out.
        let cause = std::error::Error::source(e)?;
        let io = match cause.downcast_ref::<Shared>() {
            Some(shared) => shared.downcast_ref::<std::io::Error>()?,
            None => cause.downcast_ref::<std::io::Error>()?,
        };
        Self::of(io.get_ref()?.downcast_ref::<rustls::Error>()?)
    }
}

impl CacheError {
    /// What kind of failure this is on the wire.
    pub fn code(&self) -> crate::api::routes::ErrorCode {
        use crate::api::routes::ErrorCode;
        match self {
            Self::Invalid(_) => ErrorCode::InvalidRequest,
            Self::Connect(_) => ErrorCode::RedisUnreachable,
            Self::Auth(_) => ErrorCode::RedisAuthFailed,
            Self::Command(_) => ErrorCode::RedisCommandFailed,
            Self::Busy(_) => ErrorCode::TooManyRequests,
            Self::Certificate { refusal: CertificateRefusal::Untrusted, .. } => ErrorCode::RedisCertificateUntrusted,
            Self::Certificate { refusal: CertificateRefusal::WrongName, .. } => ErrorCode::RedisServerNameMismatch,
        }
    }

    /// The connection is not worth keeping: the next request dials again.
    pub fn drops_connection(&self) -> bool {
        matches!(self, Self::Connect(_) | Self::Auth(_) | Self::Certificate { .. })
    }
}

impl From<redis::ParsingError> for CacheError {
    fn from(e: redis::ParsingError) -> Self {
        Self::Command(format!("unexpected reply from Redis: {e}"))
    }
}

impl From<redis::RedisError> for CacheError {
    fn from(e: redis::RedisError) -> Self {
        Self::Command(describe(&e))
    }
}

/// Whether Redis refused the credentials (its replies say so in words, not in a code).
fn is_auth_failure(e: &redis::RedisError) -> bool {
    let text = e.to_string();
    e.kind() == redis::ErrorKind::AuthenticationFailed
        || ["WRONGPASS", "NOAUTH", "invalid password", "invalid username-password"].iter().any(|m| text.contains(m))
}

/// A redis error as text (the crate never includes credentials in it).
pub fn describe(e: &redis::RedisError) -> String {
    let text = e.to_string();
    if is_auth_failure(e) { format!("authentication failed: {text}") } else { text }
}

/// A master of a cluster, by address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Node {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
}

/// A connected Redis.
#[derive(Clone)]
pub enum Redis {
    /// One server.
    Single(Server),
    /// A cluster.
    Cluster(ClusterConnection),
}

impl Redis {
    /// A connection that failed for good: the pool dials another instead of handing it out.
    fn is_broken(&self) -> bool {
        matches!(self, Self::Single(Server::Pinned(p)) if p.broken.load(Ordering::Relaxed))
    }
}

/// A connection to one server.
#[derive(Clone)]
pub enum Server {
    /// Reconnects by itself after a failure.
    Managed(ConnectionManager),
    /// A TLS server verified under `tlsServerName`: dialled through a resolver that sends
    /// that name to the address's host, which the connection manager cannot be given, so a
    /// multiplexed connection that the pool replaces once it has failed for good.
    Pinned(PinnedConnection),
}

/// A multiplexed connection that remembers having failed for good.
#[derive(Clone)]
pub struct PinnedConnection {
    conn: MultiplexedConnection,
    broken: Arc<AtomicBool>,
}

impl PinnedConnection {
    fn note<T>(&self, reply: &redis::RedisResult<T>) {
        if let Err(e) = reply
            && (e.is_unrecoverable_error() || e.is_connection_dropped())
        {
            self.broken.store(true, Ordering::Relaxed);
        }
    }
}

impl ConnectionLike for Server {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> redis::RedisFuture<'a, Value> {
        match self {
            Self::Managed(m) => m.req_packed_command(cmd),
            Self::Pinned(p) => Box::pin(async move {
                let reply = p.conn.req_packed_command(cmd).await;
                p.note(&reply);
                reply
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Managed(m) => m.req_packed_commands(pipeline, offset, count),
            Self::Pinned(p) => Box::pin(async move {
                let reply = p.conn.req_packed_commands(pipeline, offset, count).await;
                p.note(&reply);
                reply
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Managed(m) => m.get_db(),
            Self::Pinned(p) => p.conn.get_db(),
        }
    }
}

/// Resolves `tlsServerName` to the host of `address`: the certificate is verified for the
/// one while the socket goes to the other.
struct PinnedResolver {
    name: String,
    host: String,
}

impl redis::io::AsyncDNSResolver for PinnedResolver {
    fn resolve<'a, 'b: 'a>(
        &'a self,
        host: &'b str,
        port: u16,
    ) -> redis::RedisFuture<'a, Box<dyn Iterator<Item = SocketAddr> + Send + 'a>> {
        let host = if host == self.name { self.host.as_str() } else { host };
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host, port)).await?;
            Ok(Box::new(addrs) as Box<dyn Iterator<Item = SocketAddr> + Send>)
        })
    }
}

fn split_address(address: &str) -> Result<(String, u16), CacheError> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| CacheError::Invalid(format!("redis.address {address:?} is not host:port")))?;
    let port = port.parse().map_err(|_| CacheError::Invalid(format!("redis.address {address:?} has no valid port")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(CacheError::Invalid(format!("redis.address {address:?} has no host")));
    }
    Ok((host.to_owned(), port))
}

/// The host the TLS layer verifies and dials by name: `tlsServerName` when set (a
/// [`PinnedResolver`] then sends the socket to the address's host), else the address's.
fn connection_info(target: &RedisTarget, host: String, port: u16) -> Result<redis::ConnectionInfo, CacheError> {
    let addr = if target.tls {
        let host = target.tls_server_name.clone().unwrap_or(host);
        ConnectionAddr::TcpTls { host, port, insecure: false, tls_params: None }
    } else {
        ConnectionAddr::Tcp(host, port)
    };
    let mut redis = RedisConnectionInfo::default().set_db(i64::from(target.database));
    if let Some(user) = &target.username {
        redis = redis.set_username(user);
    }
    if let Some(password) = &target.password {
        redis = redis.set_password(&password.0);
    }
    Ok(addr.into_connection_info().map_err(|e| CacheError::Invalid(describe(&e)))?.set_redis_settings(redis))
}

/// The longest dial, read or write timeout a request may ask for: a connection attempt
/// never holds a job or a request slot longer.
pub const MAX_TIMEOUT_MILLIS: u64 = 60_000;

/// The trust a TLS target asks for beyond the system's roots: its CA bundle, parsed.
fn tls_certificates(target: &RedisTarget) -> Option<TlsCertificates> {
    target.ca_bundle.as_ref().map(|ca| TlsCertificates { client_tls: None, root_cert: Some(ca.0.clone().into_bytes()) })
}

/// Checks a CA bundle: PEM holding at least one certificate, each one a trust anchor.
fn check_ca_bundle(pem: &str) -> Result<(), String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("redis.caBundle is not valid PEM: {e}"))?;
        roots.add(cert).map_err(|e| format!("redis.caBundle holds a certificate that cannot be trusted: {e}"))?;
    }
    if roots.is_empty() {
        return Err("redis.caBundle holds no PEM certificate".into());
    }
    Ok(())
}

/// Checks what a request says about its Redis before anything dials it.
pub fn check_target(target: &RedisTarget) -> Result<(), String> {
    if !target.tls && (target.ca_bundle.is_some() || target.tls_server_name.is_some()) {
        return Err("redis.caBundle and redis.tlsServerName apply only with redis.tls".into());
    }
    if let Some(name) = &target.tls_server_name {
        if target.cluster {
            return Err("redis.tlsServerName cannot be used with a cluster".into());
        }
        rustls::pki_types::ServerName::try_from(name.as_str())
            .map_err(|_| format!("redis.tlsServerName {name:?} is not a DNS name or IP address"))?;
    }
    if let Some(ca) = &target.ca_bundle {
        check_ca_bundle(&ca.0)?;
    }
    for (field, value) in [
        ("redis.dialTimeoutMillis", target.dial_timeout_millis),
        ("redis.readTimeoutMillis", target.read_timeout_millis),
        ("redis.writeTimeoutMillis", target.write_timeout_millis),
    ] {
        if !(1..=MAX_TIMEOUT_MILLIS).contains(&value) {
            return Err(format!("{field} must be between 1 and {MAX_TIMEOUT_MILLIS} (it is {value})"));
        }
    }
    Ok(())
}

/// What one pooled connection serves. The password is not part of it: a rotated password
/// (or a caller trying many) replaces the target's connection instead of adding one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TargetKey {
    address: String,
    database: u32,
    username: Option<String>,
    tls: bool,
    /// A digest of the CA bundle: another CA is another connection, verified anew.
    ca_bundle: Option<u64>,
    tls_server_name: Option<String>,
    cluster: bool,
}

impl TargetKey {
    fn of(target: &RedisTarget) -> Self {
        Self {
            address: target.address.clone(),
            database: target.database,
            username: target.username.clone(),
            tls: target.tls,
            ca_bundle: target.ca_bundle.as_ref().map(|ca| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                ca.0.hash(&mut h);
                h.finish()
            }),
            tls_server_name: target.tls_server_name.clone(),
            cluster: target.cluster,
        }
    }
}

/// The password a connection was made with, hashed: compared, never kept.
fn secret_digest(target: &RedisTarget) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    target.password.as_ref().map(|p| &p.0).hash(&mut h);
    h.finish()
}

/// A target's connections, used in turn.
struct Pooled {
    secret: u64,
    connections: Vec<Redis>,
    next: usize,
    last_used: Instant,
}

impl Pooled {
    fn take(&mut self) -> Redis {
        self.last_used = Instant::now();
        self.next = (self.next + 1) % self.connections.len();
        self.connections[self.next].clone()
    }
}

/// Bounds of the connection pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolLimits {
    /// Connections to all Redis targets together.
    pub max_connections: usize,
    /// A target's connections unused this long are closed.
    pub idle_expiry: Duration,
}

impl Default for PoolLimits {
    fn default() -> Self {
        Self { max_connections: 64, idle_expiry: Duration::from_secs(300) }
    }
}

/// Connections per target (address, database, user, TLS, cluster), grown on use up to the
/// largest `poolSize` a request for it has asked, replaced when the password changes,
/// closed when idle, and at most `max_connections` in all.
#[derive(Clone)]
pub struct Pool {
    targets: Arc<Mutex<HashMap<TargetKey, Pooled>>>,
    limits: PoolLimits,
}

/// What a lookup found.
enum Lookup {
    /// A connection to use as it is.
    Use(Redis),
    /// Dial another connection for the target (a new one, a new password, or growth).
    Dial,
}

impl Pool {
    /// An empty pool.
    pub fn new(limits: PoolLimits) -> Self {
        Self { targets: Arc::default(), limits }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TargetKey, Pooled>> {
        self.targets.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Closes connections idle past the expiry; run periodically, and before each lookup.
    pub fn expire_idle(&self) {
        self.expire(&mut self.lock());
    }

    /// How often [`Pool::expire_idle`] is worth running.
    pub fn sweep_interval(&self) -> Duration {
        (self.limits.idle_expiry / 2).max(Duration::from_secs(1))
    }

    /// Drops connections idle past the expiry (the last handle dropped closes the socket;
    /// a job still using one keeps it until it ends).
    fn expire(&self, targets: &mut HashMap<TargetKey, Pooled>) {
        let expiry = self.limits.idle_expiry;
        targets.retain(|_, p| p.last_used.elapsed() < expiry);
    }

    /// Connections open to every target but `except`'s.
    fn open_besides(targets: &HashMap<TargetKey, Pooled>, except: &TargetKey) -> usize {
        targets.iter().filter(|(k, _)| *k != except).map(|(_, p)| p.connections.len()).sum()
    }

    fn full(&self, key: &TargetKey) -> CacheError {
        CacheError::Busy(format!(
            "the agent has {} Redis connections open already (--max-redis-connections); {} gets one once \
             others have been idle for {:?}",
            self.limits.max_connections, key.address, self.limits.idle_expiry
        ))
    }

    /// Decides, under the lock, whether to use a pooled connection or dial another.
    fn lookup(&self, key: &TargetKey, secret: u64, wanted: usize) -> Result<Lookup, CacheError> {
        let mut targets = self.lock();
        self.expire(&mut targets);
        if let Some(p) = targets.get_mut(key) {
            p.connections.retain(|c| !c.is_broken());
            if p.connections.is_empty() {
                targets.remove(key);
            }
        }
        let others = Self::open_besides(&targets, key);
        match targets.get_mut(key) {
            Some(p) if p.secret == secret => {
                let room = others + p.connections.len() < self.limits.max_connections;
                if p.connections.len() < wanted && room { Ok(Lookup::Dial) } else { Ok(Lookup::Use(p.take())) }
            }
            // A new password: its connection replaces the old ones once it has connected.
            Some(_) | None if others < self.limits.max_connections => Ok(Lookup::Dial),
            _ => Err(self.full(key)),
        }
    }

    /// A connection for a target. A new password gets a new connection, which replaces the
    /// old ones only once it has connected (a wrong password evicts nothing).
    pub async fn get(&self, target: &RedisTarget) -> Result<Redis, CacheError> {
        let (key, secret) = (TargetKey::of(target), secret_digest(target));
        let wanted = usize::try_from(target.pool_size.clamp(1, MAX_POOL_SIZE)).unwrap_or(1);
        if let Lookup::Use(redis) = self.lookup(&key, secret, wanted)? {
            return Ok(redis);
        }
        let redis = connect(target).await?;
        let mut targets = self.lock();
        // Others may have taken the room while this one connected.
        let others = Self::open_besides(&targets, &key);
        let pooled = targets.entry(key.clone()).or_insert_with(|| Pooled {
            secret,
            connections: Vec::new(),
            next: 0,
            last_used: Instant::now(),
        });
        if pooled.secret != secret {
            *pooled = Pooled { secret, connections: Vec::new(), next: 0, last_used: Instant::now() };
        }
        if others + pooled.connections.len() >= self.limits.max_connections {
            if pooled.connections.is_empty() {
                targets.remove(&key);
                return Err(self.full(&key));
            }
            return Ok(pooled.take());
        }
        pooled.connections.push(redis.clone());
        pooled.last_used = Instant::now();
        Ok(redis)
    }

    /// Forgets a target's connections (after a failure, so the next request dials again).
    pub fn forget(&self, target: &RedisTarget) {
        self.lock().remove(&TargetKey::of(target));
    }
}

/// The most connections one target gets, whatever its `poolSize` (the schema's maximum).
pub const MAX_POOL_SIZE: u32 = 100;

/// Why a dial failed, as the caller decides on it: credentials, the server's certificate
/// (saying what it was verified against), or reachability.
fn dial_error(target: &RedisTarget, e: &redis::RedisError) -> CacheError {
    let address = &target.address;
    if let Some(refusal) = CertificateRefusal::in_error(e) {
        let message = match refusal {
            CertificateRefusal::Untrusted => {
                let trust = if target.ca_bundle.is_some() {
                    "the CA bundle of redis.caSecretRef"
                } else {
                    "the system's roots (a private CA needs redis.caSecretRef)"
                };
                format!("Redis at {address} presented a TLS certificate not trusted by {trust}: {}", describe(e))
            }
            CertificateRefusal::WrongName => {
                let name = match &target.tls_server_name {
                    Some(name) => format!("redis.tlsServerName {name:?}"),
                    None => "the host of redis.address (redis.tlsServerName names another)".into(),
                };
                format!("Redis at {address} presented a TLS certificate not valid for {name}: {}", describe(e))
            }
        };
        return CacheError::Certificate { refusal, message };
    }
    let message = format!("cannot connect to Redis at {address}: {}", describe(e));
    if is_auth_failure(e) { CacheError::Auth(message) } else { CacheError::Connect(message) }
}

async fn connect(target: &RedisTarget) -> Result<Redis, CacheError> {
    let (host, port) = split_address(&target.address)?;
    let dial = Duration::from_millis(target.dial_timeout_millis.max(1));
    let io = Duration::from_millis(target.read_timeout_millis.max(target.write_timeout_millis).max(1));
    let unreachable = |e: redis::RedisError| dial_error(target, &e);
    if target.cluster {
        if target.database != 0 {
            return Err(CacheError::Invalid("a Redis Cluster has only database 0".into()));
        }
        let info = connection_info(target, host, port)?;
        let mut builder = redis::cluster::ClusterClientBuilder::new(vec![info]);
        if let Some(certs) = tls_certificates(target) {
            builder = builder.certs(certs);
        }
        let client = builder.connection_timeout(dial).response_timeout(io).retries(1).build().map_err(unreachable)?;
        let conn = tokio::time::timeout(dial + io, client.get_async_connection())
            .await
            .map_err(|_| CacheError::Connect(format!("cannot connect to Redis at {}: timed out", target.address)))?
            .map_err(unreachable)?;
        let mut redis = Redis::Cluster(conn);
        // Fail now, not mid-job, when the cluster is not usable.
        redis
            .query::<String>(None, &redis::cmd("PING"))
            .await
            .map_err(|e| CacheError::Connect(format!("cannot use Redis at {}: {e}", target.address)))?;
        Ok(redis)
    } else {
        let info = connection_info(target, host.clone(), port)?;
        let client = match tls_certificates(target) {
            Some(certs) => redis::Client::build_with_tls(info, certs),
            None => redis::Client::open(info),
        }
        .map_err(unreachable)?;
        let timed_out = || CacheError::Connect(format!("cannot connect to Redis at {}: timed out", target.address));
        if let Some(name) = target.tls_server_name.clone() {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(dial))
                .set_response_timeout(Some(io))
                .set_dns_resolver(PinnedResolver { name, host });
            let conn = tokio::time::timeout(dial + io, client.get_multiplexed_async_connection_with_config(&config))
                .await
                .map_err(|_| timed_out())?
                .map_err(unreachable)?;
            return Ok(Redis::Single(Server::Pinned(PinnedConnection { conn, broken: Arc::default() })));
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(dial))
            .set_response_timeout(Some(io))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let manager = tokio::time::timeout(dial + io, client.get_connection_manager_with_config(config))
            .await
            .map_err(|_| timed_out())?
            .map_err(unreachable)?;
        Ok(Redis::Single(Server::Managed(manager)))
    }
}

fn route(node: &Node) -> RoutingInfo {
    RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host: node.host.clone(), port: node.port })
}

impl Redis {
    /// The nodes a scan must cover: the server, or every master of the cluster.
    pub async fn scan_nodes(&mut self) -> Result<Vec<Option<Node>>, CacheError> {
        match self {
            Self::Single(_) => Ok(vec![None]),
            Self::Cluster(c) => {
                let value = c
                    .route_command(
                        redis::cmd("CLUSTER").arg("NODES").clone(),
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary),
                    )
                    .await?;
                let text: String = redis::from_redis_value(value)?;
                let masters: Vec<Option<Node>> = parse_cluster_masters(&text).into_iter().map(Some).collect();
                if masters.is_empty() {
                    return Err(CacheError::Command("the cluster reports no master".into()));
                }
                Ok(masters)
            }
        }
    }

    /// Runs a command on the server, or on one master (`None`: routed by key, any node).
    pub async fn query<T: redis::FromRedisValue>(&mut self, node: Option<&Node>, cmd: &Cmd) -> Result<T, CacheError> {
        let value: Value = match (self, node) {
            (Self::Single(m), _) => cmd.query_async(m).await?,
            (Self::Cluster(c), Some(n)) => c.route_command(cmd.clone(), route(n)).await?,
            (Self::Cluster(c), None) => cmd.query_async(c).await?,
        };
        Ok(redis::from_redis_value(value)?)
    }

    /// Runs a pipeline on the server or one master.
    pub async fn pipeline(&mut self, node: Option<&Node>, pipe: &Pipeline) -> Result<Vec<Value>, CacheError> {
        Ok(match (self, node) {
            (Self::Single(m), _) => pipe.query_async(m).await?,
            (Self::Cluster(c), Some(n)) => {
                let count = pipe.cmd_iter().count();
                c.route_pipeline(
                    pipe.clone(),
                    0,
                    count,
                    SingleNodeRoutingInfo::ByAddress { host: n.host.clone(), port: n.port },
                )
                .await?
            }
            (Self::Cluster(c), None) => {
                // Keys of one pipeline may live on different masters: send each on its own.
                let mut out = Vec::new();
                for cmd in pipe.cmd_iter() {
                    out.push(cmd.query_async::<Value>(c).await?);
                }
                out
            }
        })
    }

    /// One `SCAN` step.
    pub async fn scan(
        &mut self,
        node: Option<&Node>,
        cursor: u64,
        pattern: Option<&str>,
        count: usize,
    ) -> Result<(u64, Vec<Vec<u8>>), CacheError> {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor);
        if let Some(p) = pattern {
            cmd.arg("MATCH").arg(p);
        }
        cmd.arg("COUNT").arg(count);
        self.query(node, &cmd).await
    }

    /// Unlinks keys (all on `node` when given); returns how many existed.
    pub async fn unlink(&mut self, node: Option<&Node>, keys: &[Vec<u8>]) -> Result<u64, CacheError> {
        if keys.is_empty() {
            return Ok(0);
        }
        match (&*self, node) {
            (Self::Single(_), _) => {
                let mut cmd = redis::cmd("UNLINK");
                for k in keys {
                    cmd.arg(k.as_slice());
                }
                self.query(node, &cmd).await
            }
            _ => {
                let mut pipe = redis::pipe();
                for k in keys {
                    pipe.cmd("UNLINK").arg(k.as_slice());
                }
                let replies = self.pipeline(node, &pipe).await?;
                Ok(replies.into_iter().map(|v| redis::from_redis_value::<u64>(v).unwrap_or(0)).sum())
            }
        }
    }
}

/// The masters in `CLUSTER NODES` output that are not failing.
pub fn parse_cluster_masters(text: &str) -> Vec<Node> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            if !flags.split(',').any(|f| f == "master") || flags.contains("fail") {
                return None;
            }
            let addr = fields.get(1)?.split('@').next()?;
            let (host, port) = addr.rsplit_once(':')?;
            Some(Node { host: host.trim_start_matches('[').trim_end_matches(']').to_owned(), port: port.parse().ok()? })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_masters_from_cluster_nodes() {
        let text = "a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460\n\
                    b2 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-10922\n\
                    c3 127.0.0.1:7002@17002 master,fail - 0 0 3 connected\n\
                    d4 127.0.0.1:7003@17003 slave a1 0 0 1 connected\n";
        assert_eq!(
            parse_cluster_masters(text),
            vec![Node { host: "127.0.0.1".into(), port: 7000 }, Node { host: "127.0.0.1".into(), port: 7001 }]
        );
    }

    #[test]
    fn addresses() {
        assert_eq!(split_address("redis.shop.svc:6379").unwrap(), ("redis.shop.svc".into(), 6379));
        assert_eq!(split_address("[::1]:6379").unwrap(), ("::1".into(), 6379));
        assert!(split_address("redis").is_err());
    }

    #[test]
    fn passwords_do_not_show_in_debug() {
        let t = RedisTarget {
            address: "r:1".into(),
            database: 0,
            username: None,
            password: Some(crate::api::Password("hunter2".into())),
            tls: false,
            ca_bundle: None,
            tls_server_name: None,
            cluster: false,
            dial_timeout_millis: 1,
            read_timeout_millis: 1,
            write_timeout_millis: 1,
            pool_size: 1,
        };
        assert!(!format!("{t:?}").contains("hunter2"));
    }
}
