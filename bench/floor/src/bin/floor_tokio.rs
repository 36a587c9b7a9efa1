//! `floor-tokio LISTEN UPSTREAM POOL_SIZE`: the floor of a transaction pooler on tokio's
//! current-thread runtime, as a task per client with async reads and writes (how
//! poolwarden-sidecar is built). Trust logins, a last-in-first-out stack of server
//! connections. A measuring instrument (see the crate's Cargo.toml): no wait queue (an
//! empty pool yields and tries again; `scripts/profile`'s `-c 10` runs with a pool of 20
//! never wait), a failed connection ends its task. It makes the system calls floor-mio makes
//! (two reads and two writes per `-S` transaction: tokio drops a socket's readiness after a
//! short read, so no read finds it empty).

use std::cell::RefCell;
use std::rc::Rc;

use poolwarden_floor::{Buf, Startup, complete, server_login, take_startup};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Read what the socket has; `false` when it closed or failed.
async fn fill(sock: &mut TcpStream, buf: &mut Buf) -> bool {
    match sock.read(buf.tail()).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.filled(n);
            true
        }
    }
}

/// Read until `buf` holds a complete message; `false` when the socket closed or failed.
async fn next_message(sock: &mut TcpStream, buf: &mut Buf) -> bool {
    while complete(buf.bytes()).0 == 0 {
        if !fill(sock, buf).await {
            return false;
        }
    }
    true
}

struct ServerConn {
    sock: TcpStream,
    buf: Buf,
}

type Pool = Rc<RefCell<Vec<ServerConn>>>;

async fn login(sock: &mut TcpStream, buf: &mut Buf) -> bool {
    loop {
        let Some(startup) = take_startup(buf) else {
            if !fill(sock, buf).await {
                return false;
            }
            continue;
        };
        if sock.write_all(&startup.reply()).await.is_err() {
            return false;
        }
        if matches!(startup, Startup::Login) {
            return true;
        }
    }
}

/// One transaction on `server`, starting with the complete messages in `buf`; `false` when
/// a connection failed.
async fn transaction(sock: &mut TcpStream, buf: &mut Buf, server: &mut ServerConn) -> bool {
    loop {
        let (n, _) = complete(buf.bytes());
        if n > 0 {
            if server.sock.write_all(&buf.bytes()[..n]).await.is_err() {
                return false;
            }
            buf.consume(n);
        }
        loop {
            if !fill(&mut server.sock, &mut server.buf).await {
                return false;
            }
            let (m, ready) = complete(server.buf.bytes());
            if m > 0 {
                if sock.write_all(&server.buf.bytes()[..m]).await.is_err() {
                    return false;
                }
                server.buf.consume(m);
            }
            match ready {
                Some(b'I') if server.buf.is_empty() => return true,
                // Inside a transaction: the client's next message.
                Some(_) if server.buf.is_empty() => break,
                _ => {}
            }
        }
        if !next_message(sock, buf).await {
            return false;
        }
    }
}

async fn client(mut sock: TcpStream, pool: Pool) {
    let _ = sock.set_nodelay(true);
    let mut buf = Buf::default();
    if !login(&mut sock, &mut buf).await {
        return;
    }
    loop {
        if !next_message(&mut sock, &mut buf).await {
            return;
        }
        if buf.bytes()[0] == b'X' {
            return;
        }
        let mut server = loop {
            if let Some(s) = pool.borrow_mut().pop() {
                break s;
            }
            tokio::task::yield_now().await;
        };
        if !transaction(&mut sock, &mut buf, &mut server).await {
            return;
        }
        pool.borrow_mut().push(server);
    }
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, upstream, size] = &args[..] else {
        eprintln!("usage: floor-tokio LISTEN UPSTREAM POOL_SIZE");
        std::process::exit(2);
    };
    let size: usize = size.parse().map_err(std::io::Error::other)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let pool: Pool = Rc::new(RefCell::new(Vec::new()));
        for _ in 0..size {
            let conn = server_login(upstream)?;
            conn.set_nonblocking(true)?;
            pool.borrow_mut().push(ServerConn {
                sock: TcpStream::from_std(conn)?,
                buf: Buf::default(),
            });
        }
        let listener = TcpListener::bind(listen.as_str()).await?;
        loop {
            let (sock, _) = listener.accept().await?;
            tokio::task::spawn_local(client(sock, pool.clone()));
        }
    })
}
