//! The data plane's sockets with a minimal loop that passes every event on to the tasks
//! waiting on its socket (what the proxy's loop does for sockets no session in it holds).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// A loop thread that wakes the tasks of every socket with an event, until `stop`.
fn wake_only_loop(plane: DataPlane, mut poll: mio::Poll) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    std::thread::spawn(move || {
        let mut events = mio::Events::with_capacity(64);
        while !stopped.load(Ordering::SeqCst) {
            poll.poll(&mut events, Some(std::time::Duration::from_millis(20)))
                .unwrap();
            for ev in events.iter() {
                if ev.token() == WAKER {
                    continue;
                }
                if let Some(s) = plane.socket(ev.token()) {
                    s.wake(
                        ev.is_readable(),
                        ev.is_read_closed(),
                        ev.is_writable() || ev.is_write_closed(),
                    );
                }
            }
        }
    });
    stop
}

/// A connected pair: (our end on the data plane, the peer's tokio socket).
async fn pair(plane: &DataPlane) -> (LoopSocket, tokio::net::TcpStream) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ours = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (peer, _) = l.accept().await.unwrap();
    ours.set_nonblocking(true).unwrap();
    let ours = plane
        .adopt_mio(mio::net::TcpStream::from_std(ours))
        .unwrap();
    (ours, peer)
}

/// A tokio task reads and writes a loop socket: the loop's events wake it, both ways, and
/// a message larger than the socket buffers (which needs many wake-ups) arrives whole.
#[tokio::test]
async fn tokio_tasks_use_a_loop_socket_through_the_loops_events() {
    let (plane, poll) = DataPlane::new(0).unwrap();
    let stop = wake_only_loop(plane.clone(), poll);
    let (mut ours, mut peer) = pair(&plane).await;
    let big: Vec<u8> = (0..8 << 20).map(|i| (i % 251) as u8).collect();
    let sent = big.clone();
    let writer = tokio::spawn(async move {
        peer.write_all(&sent).await.unwrap();
        let mut back = vec![0u8; 5];
        peer.read_exact(&mut back).await.unwrap();
        back
    });
    let mut got = vec![0u8; big.len()];
    // A wake-up the loop failed to pass on would leave the task waiting for ever.
    let limit = std::time::Duration::from_secs(60);
    tokio::time::timeout(limit, ours.read_exact(&mut got))
        .await
        .expect("woken by the loop")
        .unwrap();
    assert!(got == big, "the bytes arrived in order");
    ours.write_all(b"hello").await.unwrap();
    let back = tokio::time::timeout(limit, writer).await.expect("written");
    assert_eq!(back.unwrap(), b"hello");
    stop.store(true, Ordering::SeqCst);
}

/// The loop's own reads: `maybe_readable` starts set, a read that finds nothing clears it,
/// a readable event sets it again; a short read clears it, a read that fills the buffer
/// leaves it set (more may wait).
#[tokio::test]
async fn readable_flag_follows_the_loops_reads() {
    let (plane, _poll) = DataPlane::new(0).unwrap();
    let (ours, mut peer) = pair(&plane).await;
    let mut buf = [0u8; 4];
    assert!(ours.maybe_readable(), "a new socket is looked at once");
    let e = ours.read_now(&mut buf).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
    assert!(!ours.maybe_readable());
    peer.write_all(b"abcdef").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    ours.mark(true, false);
    assert_eq!(ours.read_now(&mut buf).unwrap(), 4);
    assert!(ours.maybe_readable(), "a full read: more may wait");
    assert_eq!(ours.read_now(&mut buf).unwrap(), 2);
    assert!(!ours.maybe_readable(), "a short read drained the socket");
    assert_eq!(&buf[..2], b"ef");
}

/// A task's reads (`AsyncRead`, the login's and tokio's) follow the loop's rule: after a
/// short read the socket is not read again until the loop notes an event, even with bytes
/// waiting (no system call that would only find nothing); a read that fills the buffer
/// leaves it to be read again.
#[tokio::test]
async fn task_reads_wait_for_the_loops_event_after_a_short_read() {
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::io::{AsyncRead, ReadBuf};

    fn poll_once(s: &mut LoopSocket, buf: &mut [u8]) -> Poll<usize> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut rb = ReadBuf::new(buf);
        match Pin::new(s).poll_read(&mut cx, &mut rb) {
            Poll::Ready(r) => Poll::Ready(r.map(|()| rb.filled().len()).unwrap()),
            Poll::Pending => Poll::Pending,
        }
    }

    let (plane, _poll) = DataPlane::new(0).unwrap();
    let (mut ours, mut peer) = pair(&plane).await;
    let mut buf = [0u8; 4];
    peer.write_all(b"ab").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(
        poll_once(&mut ours, &mut buf),
        Poll::Ready(2),
        "a new socket is read"
    );
    peer.write_all(b"cdefgh").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(
        poll_once(&mut ours, &mut buf),
        Poll::Pending,
        "after a short read, no read before the loop's event"
    );
    ours.mark(true, false);
    assert_eq!(poll_once(&mut ours, &mut buf), Poll::Ready(4), "the event");
    assert_eq!(&buf, b"cdef");
    assert_eq!(
        poll_once(&mut ours, &mut buf),
        Poll::Ready(2),
        "a full read: read again without an event"
    );
    assert_eq!(&buf[..2], b"gh");
    assert_eq!(poll_once(&mut ours, &mut buf), Poll::Pending);
}

/// A socket's token is its own while it is open and is given to the next socket after it
/// closes; the loop finds no socket under a closed one's token.
#[tokio::test]
async fn tokens_are_reused_after_close() {
    let (plane, _poll) = DataPlane::new(0).unwrap();
    let (a, _pa) = pair(&plane).await;
    let (b, _pb) = pair(&plane).await;
    assert_ne!(a.token(), b.token());
    let token = a.token();
    assert!(plane.socket(token).is_some());
    drop(a);
    assert!(plane.socket(token).is_none(), "closed: nothing to wake");
    let (c, _pc) = pair(&plane).await;
    assert_eq!(c.token(), token, "the free token is taken again");
}

/// `peek_now` tells a client that left from one that sent more, without taking a byte.
#[tokio::test]
async fn peek_now_tells_an_end_from_more_bytes() {
    let (plane, _poll) = DataPlane::new(0).unwrap();
    let (ours, mut peer) = pair(&plane).await;
    assert_eq!(ours.peek_now(), Peeked::Nothing, "nothing yet");
    peer.write_all(b"Q").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(ours.peek_now(), Peeked::Bytes);
    assert!(ours.maybe_readable(), "the byte is still to be read");
    let mut one = [0u8; 1];
    assert_eq!(ours.read_now(&mut one).unwrap(), 1);
    drop(peer);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(ours.peek_now(), Peeked::Closed);
}

/// Bytes and the peer's end in one edge: after the short read that takes the bytes, the
/// socket stays readable (the end of stream is still to be read) once the loop saw the end.
#[tokio::test]
async fn the_end_of_stream_stays_readable_after_a_short_read() {
    let (plane, _poll) = DataPlane::new(0).unwrap();
    let (ours, mut peer) = pair(&plane).await;
    peer.write_all(b"ab").await.unwrap();
    drop(peer);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    ours.mark(false, true);
    let mut buf = [0u8; 8];
    assert_eq!(ours.read_now(&mut buf).unwrap(), 2);
    assert!(ours.maybe_readable(), "the end is still to be read");
    assert_eq!(ours.read_now(&mut buf).unwrap(), 0);
}

/// Poll `poll` (at most 5 s) until an event for `token` comes: whether it said readable.
fn event_for(poll: &mut mio::Poll, token: mio::Token) -> Option<bool> {
    let mut events = mio::Events::with_capacity(16);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        poll.poll(&mut events, Some(std::time::Duration::from_millis(50)))
            .unwrap();
        if let Some(ev) = events.iter().find(|ev| ev.token() == token) {
            return Some(ev.is_readable());
        }
    }
    None
}

/// A socket moved to another loop's plane: out of the first plane's table and epoll set,
/// under a token of the second, whose `Poll` reports what was ready already (bytes that
/// arrived before the move are not lost) and the edges after it; the first sees no more.
#[tokio::test]
async fn a_socket_moves_to_another_loop_with_its_readiness() {
    let (a, mut poll_a) = DataPlane::new(0).unwrap();
    let (b, mut poll_b) = DataPlane::new(1).unwrap();
    let (ours, mut peer) = pair(&a).await;
    let old = ours.token();
    assert_eq!(ours.plane_index(), 0);
    // Take the first writable edge, so that only new events count below.
    let _ = event_for(&mut poll_a, old);
    peer.write_all(b"before").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    ours.move_to(&b).unwrap();
    assert_eq!(ours.plane_index(), 1);
    assert!(a.socket(old).is_none(), "gone from the first plane's table");
    assert!(
        b.socket(ours.token()).is_some(),
        "in the second plane's table"
    );
    assert!(ours.maybe_readable(), "tried once after the move");
    assert_eq!(
        event_for(&mut poll_b, ours.token()),
        Some(true),
        "the bytes that came before the move are reported by the new loop"
    );
    let mut buf = [0u8; 16];
    assert_eq!(ours.read_now(&mut buf).unwrap(), 6);
    assert_eq!(&buf[..6], b"before");
    peer.write_all(b"after").await.unwrap();
    assert_eq!(
        event_for(&mut poll_b, ours.token()),
        Some(true),
        "new edges too"
    );
    let mut events = mio::Events::with_capacity(16);
    poll_a
        .poll(&mut events, Some(std::time::Duration::from_millis(50)))
        .unwrap();
    assert!(events.is_empty(), "the first loop hears nothing more");
    ours.move_to(&b).unwrap();
    assert_eq!(
        ours.plane_index(),
        1,
        "a move to its own plane changes nothing"
    );
    let token = ours.token();
    drop(ours);
    assert!(
        b.socket(token).is_none(),
        "closed: its token in the second plane is free"
    );
}
