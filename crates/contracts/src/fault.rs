//! A TCP proxy that tests put between Waiter and a service (PostgreSQL,
//! Redis) to cause that service's outages for real, without stopping the
//! shared server other tests use.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

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
}

/// A proxy on a free loopback port in front of `upstream`.
///
/// Switching the [`Link`] also cuts every connection open at that moment, so
/// pooled connections die the way they would when the service goes away.
/// Dropping the proxy stops it.
pub struct FaultyProxy {
    address: SocketAddr,
    link: Arc<AtomicU8>,
    cut: watch::Sender<u64>,
    acceptor: JoinHandle<()>,
}

impl FaultyProxy {
    /// Starts forwarding to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let link = Arc::new(AtomicU8::new(Link::Up as u8));
        let (cut, _) = watch::channel(0);
        let acceptor = tokio::spawn(accept(
            listener,
            upstream.to_owned(),
            link.clone(),
            cut.clone(),
        ));
        Ok(Self {
            address,
            link,
            cut,
            acceptor,
        })
    }

    /// The address to connect to instead of the upstream's.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Switches the link, cutting every connection open now.
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
    cut: watch::Sender<u64>,
) {
    while let Ok((client, _)) = listener.accept().await {
        let mut cut = cut.subscribe();
        let state = link.load(Ordering::SeqCst);
        let upstream = upstream.clone();
        tokio::spawn(async move {
            if state == Link::Down as u8 {
                return; // dropping `client` closes it
            }
            let forward = async {
                if state == Link::Silent as u8 {
                    std::future::pending::<()>().await;
                }
                if let Ok(mut server) = TcpStream::connect(&upstream).await {
                    let mut client = client;
                    let _ = copy_bidirectional(&mut client, &mut server).await;
                }
            };
            tokio::select! {
                () = forward => {}
                _ = cut.changed() => {}
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
