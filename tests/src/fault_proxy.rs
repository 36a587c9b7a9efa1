//! A TCP fault proxy for fault-injection tests: listens on 127.0.0.1:0, forwards every
//! connection to a target (the database), and injects faults on command while running:
//!
//! - [`set_latency`](FaultProxy::set_latency): delay every chunk of bytes, both directions;
//! - [`stall`](FaultProxy::stall): stop forwarding (bytes pile up in the kernel buffers, as
//!   with a dropped route), until [`resume`](FaultProxy::resume);
//! - [`reset_all`](FaultProxy::reset_all): abort every open connection with an RST
//!   (`SO_LINGER` 0) on both sides, as a peer or middlebox reset does;
//! - [`hold_new`](FaultProxy::hold_new): accept new connections but do not connect them on
//!   until released (a database slow to accept connections).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug)]
struct Control {
    target: SocketAddr,
    latency_ms: AtomicU64,
    stalled: watch::Sender<bool>,
    holding: watch::Sender<bool>,
    resets: watch::Sender<u64>,
    open: AtomicUsize,
    accepted: AtomicUsize,
}

/// A running proxy; stops (and drops its connections) on drop.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    ctl: Arc<Control>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Start forwarding to `target`. Must be called inside a tokio runtime.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let ctl = Arc::new(Control {
            target,
            latency_ms: AtomicU64::new(0),
            stalled: watch::channel(false).0,
            holding: watch::channel(false).0,
            resets: watch::channel(0).0,
            open: AtomicUsize::new(0),
            accepted: AtomicUsize::new(0),
        });
        let task = tokio::spawn(accept_loop(listener, ctl.clone()));
        Ok(Self { addr, ctl, task })
    }

    /// Its address (127.0.0.1 and an ephemeral port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Delay each forwarded chunk by `latency` (zero: none).
    pub fn set_latency(&self, latency: Duration) {
        let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        self.ctl.latency_ms.store(ms, Ordering::SeqCst);
    }

    /// Stop forwarding bytes in both directions on every connection, open and new.
    pub fn stall(&self) {
        self.ctl.stalled.send_replace(true);
    }

    /// Forward again after [`stall`](Self::stall).
    pub fn resume(&self) {
        self.ctl.stalled.send_replace(false);
    }

    /// Accept new connections but hold them (no connection to the target) until
    /// [`release_new`](Self::release_new).
    pub fn hold_new(&self) {
        self.ctl.holding.send_replace(true);
    }

    /// Connect held and new connections on again.
    pub fn release_new(&self) {
        self.ctl.holding.send_replace(false);
    }

    /// Abort every open connection with an RST on both sides.
    pub fn reset_all(&self) {
        self.ctl.resets.send_modify(|n| *n += 1);
    }

    /// Connections currently forwarded (or held).
    pub fn open_connections(&self) -> usize {
        self.ctl.open.load(Ordering::SeqCst)
    }

    /// Connections accepted since the start.
    pub fn accepted(&self) -> usize {
        self.ctl.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        // Open connections notice through the reset channel being closed.
        self.ctl.resets.send_modify(|n| *n += 1);
    }
}

async fn accept_loop(listener: TcpListener, ctl: Arc<Control>) {
    while let Ok((client, _)) = listener.accept().await {
        ctl.accepted.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(serve(client, ctl.clone()));
    }
}

struct OpenGuard<'a>(&'a AtomicUsize);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn serve(client: TcpStream, ctl: Arc<Control>) {
    ctl.open.fetch_add(1, Ordering::SeqCst);
    let _open = OpenGuard(&ctl.open);
    let mut resets = ctl.resets.subscribe();
    resets.mark_unchanged();
    let mut holding = ctl.holding.subscribe();
    let upstream = tokio::select! {
        () = until_false(&mut holding) => TcpStream::connect(ctl.target).await,
        _ = resets.changed() => {
            let _ = client.set_zero_linger();
            return;
        }
    };
    let Ok(upstream) = upstream else {
        let _ = client.set_zero_linger();
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    // Borrowed halves: dropping them sends nothing (owned write halves send a FIN).
    let (mut client, mut upstream) = (client, upstream);
    let reset = {
        let (mut cr, mut cw) = client.split();
        let (mut ur, mut uw) = upstream.split();
        tokio::select! {
            () = pump(&mut cr, &mut uw, &ctl) => false,
            () = pump(&mut ur, &mut cw, &ctl) => false,
            _ = resets.changed() => true,
        }
    };
    if reset {
        let _ = client.set_zero_linger();
        let _ = upstream.set_zero_linger();
    }
}

/// Wait until the flag is false (returns at once if the sender is gone).
async fn until_false(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|v| !*v).await;
}

async fn pump(from: &mut ReadHalf<'_>, to: &mut WriteHalf<'_>, ctl: &Control) {
    let mut stalled = ctl.stalled.subscribe();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        until_false(&mut stalled).await;
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let ms = ctl.latency_ms.load(Ordering::SeqCst);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        until_false(&mut stalled).await;
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// An echo server on loopback: the proxy's target.
    async fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        s.write_all(msg).await?;
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).await?;
        Ok(got)
    }

    const LIMIT: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn forwards_and_resets_with_rst() {
        let proxy = FaultProxy::start(echo().await).await.unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut s, b"hello").await.unwrap(), b"hello");
        proxy.reset_all();
        let mut buf = [0u8; 8];
        let r = tokio::time::timeout(LIMIT, s.read(&mut buf)).await.unwrap();
        let e = r.expect_err("a reset connection reads an error, not EOF");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);
        // New connections work after a reset.
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut s, b"again").await.unwrap(), b"again");
    }

    #[tokio::test]
    async fn stall_holds_bytes_until_resume() {
        let proxy = FaultProxy::start(echo().await).await.unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut s, b"1").await.unwrap(), b"1");
        proxy.stall();
        s.write_all(b"2").await.unwrap();
        let mut b = [0u8; 1];
        // Nothing comes back while stalled (a short wait; the claim is "not yet", not timing).
        let early = tokio::time::timeout(Duration::from_millis(300), s.read_exact(&mut b)).await;
        assert!(early.is_err(), "bytes crossed a stalled proxy");
        proxy.resume();
        tokio::time::timeout(LIMIT, s.read_exact(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&b, b"2");
    }

    #[tokio::test]
    async fn latency_delays_each_chunk() {
        let proxy = FaultProxy::start(echo().await).await.unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        proxy.set_latency(Duration::from_millis(200));
        let t = Instant::now();
        roundtrip(&mut s, b"x").await.unwrap();
        // Two hops (there and back) each wait at least the latency: a lower bound only.
        assert!(t.elapsed() >= Duration::from_millis(400));
    }

    #[tokio::test]
    async fn held_connections_connect_when_released() {
        let proxy = FaultProxy::start(echo().await).await.unwrap();
        proxy.hold_new();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        s.write_all(b"h").await.unwrap();
        let mut b = [0u8; 1];
        let early = tokio::time::timeout(Duration::from_millis(300), s.read_exact(&mut b)).await;
        assert!(early.is_err(), "a held connection was forwarded");
        assert_eq!(proxy.open_connections(), 1);
        proxy.release_new();
        tokio::time::timeout(LIMIT, s.read_exact(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&b, b"h");
        assert_eq!(proxy.accepted(), 1);
    }
}
