//! A TCP proxy that tests put between Waiter and a service (PostgreSQL,
//! Redis) to cause that service's outages for real, without stopping the
//! shared server other tests use.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Link {
    /// Forwards every byte both ways.
    Up = 0,
    /// Closes every connection at once, as a stopped server would: callers
    /// learn of the outage immediately.
    Down = 1,
    /// Accepts connections and never answers, as a partitioned network
    /// would: callers learn of the outage only from their own timeouts.
    Silent = 2,
    /// Like `Silent`, but keeps the connections open at the switch open,
    /// forwarding nothing more on them: a partition as a connection that
    /// only listens sees it (no close, no error), which only a keepalive
    /// of the caller's notices.
    Frozen = 3,
}

/// A proxy on a free loopback port in front of `upstream`.
///
/// Switching the [`Link`] also cuts every connection open at that moment
/// (but to [`Link::Frozen`], which freezes them), so pooled connections die
/// the way they would when the service goes away. Dropping the proxy stops
/// it.
pub struct FaultyProxy {
    address: SocketAddr,
    link: Arc<AtomicU8>,
    accepted: Arc<AtomicUsize>,
    cut: watch::Sender<u64>,
    acceptor: JoinHandle<()>,
}

impl FaultyProxy {
    /// Starts forwarding to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let link = Arc::new(AtomicU8::new(Link::Up as u8));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (cut, _) = watch::channel(0);
        let acceptor = tokio::spawn(accept(
            listener,
            upstream.to_owned(),
            link.clone(),
            accepted.clone(),
            cut.clone(),
        ));
        Ok(Self {
            address,
            link,
            accepted,
            cut,
            acceptor,
        })
    }

    /// The address to connect to instead of the upstream's.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// How many connections the proxy has accepted so far, whatever the
    /// link: how a test sees a caller connect again.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Switches the link, cutting every connection open now (freezing
    /// them, for [`Link::Frozen`]).
    pub fn set(&self, link: Link) {
        self.link.store(link as u8, Ordering::SeqCst);
        self.cut.send_modify(|generation| *generation += 1);
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.cut.send_modify(|generation| *generation += 1);
    }
}

async fn accept(
    listener: TcpListener,
    upstream: String,
    link: Arc<AtomicU8>,
    accepted: Arc<AtomicUsize>,
    cut: watch::Sender<u64>,
) {
    while let Ok((client, _)) = listener.accept().await {
        accepted.fetch_add(1, Ordering::SeqCst);
        let mut cut = cut.subscribe();
        let state = link.load(Ordering::SeqCst);
        let upstream = upstream.clone();
        let link = link.clone();
        tokio::spawn(async move {
            if state == Link::Down as u8 {
                return; // dropping `client` closes it
            }
            let mut client = client;
            let mut server = None;
            let forward = async {
                if state == Link::Silent as u8 || state == Link::Frozen as u8 {
                    std::future::pending::<()>().await;
                }
                if let Ok(connected) = TcpStream::connect(&upstream).await {
                    let server = server.insert(connected);
                    let _ = copy_bidirectional(&mut client, server).await;
                }
            };
            tokio::select! {
                () = forward => return,
                _ = cut.changed() => {}
            }
            if link.load(Ordering::SeqCst) == Link::Frozen as u8 {
                // Both ends stay open, forwarding nothing, until the next switch.
                let _ = cut.changed().await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An upstream that echoes what it reads.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = socket.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        address
    }

    async fn round_trip(address: SocketAddr) -> std::io::Result<Vec<u8>> {
        let mut socket = TcpStream::connect(address).await?;
        socket.write_all(b"ping").await?;
        let mut reply = [0; 4];
        socket.read_exact(&mut reply).await?;
        Ok(reply.to_vec())
    }

    #[tokio::test]
    async fn forwards_refuses_and_goes_silent_on_command() {
        let proxy = FaultyProxy::start(&echo_server().await.to_string())
            .await
            .unwrap();
        assert_eq!(round_trip(proxy.address()).await.unwrap(), b"ping");

        proxy.set(Link::Down);
        assert!(round_trip(proxy.address()).await.is_err());

        proxy.set(Link::Silent);
        let silent = tokio::time::timeout(Duration::from_millis(200), round_trip(proxy.address()));
        assert!(silent.await.is_err(), "a silent link never answers");

        proxy.set(Link::Up);
        assert_eq!(round_trip(proxy.address()).await.unwrap(), b"ping");
    }

    #[tokio::test]
    async fn freezing_keeps_open_connections_open_and_forwards_nothing() {
        let proxy = FaultyProxy::start(&echo_server().await.to_string())
            .await
            .unwrap();
        let mut socket = TcpStream::connect(proxy.address()).await.unwrap();
        socket.write_all(b"ping").await.unwrap();
        let mut reply = [0; 4];
        socket.read_exact(&mut reply).await.unwrap();
        assert_eq!(proxy.accepted(), 1);

        proxy.set(Link::Frozen);
        socket.write_all(b"ping").await.unwrap();
        let read = tokio::time::timeout(Duration::from_millis(200), socket.read(&mut reply));
        assert!(read.await.is_err(), "neither an answer nor a close");
        let fresh = tokio::time::timeout(Duration::from_millis(200), round_trip(proxy.address()));
        assert!(fresh.await.is_err(), "a new connection is never answered");
        assert_eq!(proxy.accepted(), 2);

        proxy.set(Link::Up);
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(2), socket.read_to_end(&mut rest));
        // A reset, rather than an end, since the frozen ping was never read.
        let closed = read.await.expect("the next switch closes it");
        assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
        assert_eq!(round_trip(proxy.address()).await.unwrap(), b"ping");
    }

    #[tokio::test]
    async fn switching_the_link_cuts_open_connections() {
        let proxy = FaultyProxy::start(&echo_server().await.to_string())
            .await
            .unwrap();
        let mut socket = TcpStream::connect(proxy.address()).await.unwrap();
        socket.write_all(b"ping").await.unwrap();
        let mut reply = [0; 4];
        socket.read_exact(&mut reply).await.unwrap();

        proxy.set(Link::Up);
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(2), socket.read_to_end(&mut rest));
        assert_eq!(
            read.await.unwrap().unwrap(),
            0,
            "the proxy closed the connection"
        );
    }
}
