//! `floor-mio LISTEN UPSTREAM POOL_SIZE`: the floor of a transaction pooler on one mio event
//! loop with plain per-connection structs (what PgBouncer does with libevent). Trust logins,
//! a last-in-first-out stack of idle server connections, a first-in-first-out queue of
//! clients waiting for one. A measuring instrument (see the crate's Cargo.toml): writes are
//! assumed to go through whole (pgbench's messages are small), a server that fails ends the
//! process, a client that leaves mid-transaction gives its server back as it is.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use poolwarden_floor::{Buf, Startup, complete, server_login, take_startup};

const LISTENER: Token = Token(usize::MAX);
/// Set in a server connection's token.
const SERVER: usize = 1 << 40;

struct Client {
    sock: TcpStream,
    buf: Buf,
    logged_in: bool,
    server: Option<usize>,
    queued: bool,
}

struct Server {
    sock: TcpStream,
    buf: Buf,
    client: Option<usize>,
}

/// Read what the socket has; `false` when it closed or failed. A read shorter than the
/// buffer's room drained the socket, and edge-triggered epoll reports the next arrival, so
/// no read is made to see `WouldBlock`.
fn read_available(sock: &mut TcpStream, buf: &mut Buf) -> bool {
    loop {
        let tail = buf.tail();
        let room = tail.len();
        match sock.read(tail) {
            Ok(0) => return false,
            Ok(n) => {
                buf.filled(n);
                if n < room {
                    return true;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

fn write_whole(sock: &mut TcpStream, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        match sock.write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

#[derive(Default)]
struct Relay {
    clients: Vec<Option<Client>>,
    free_slots: Vec<usize>,
    servers: Vec<Server>,
    idle: Vec<usize>,
    queue: VecDeque<usize>,
}

impl Relay {
    /// Act on what client `c` has sent; `false` when it should be closed.
    fn client_work(&mut self, c: usize) -> bool {
        let Some(client) = self.clients[c].as_mut() else {
            return true;
        };
        while !client.logged_in {
            let Some(startup) = take_startup(&mut client.buf) else {
                return true;
            };
            client.logged_in = matches!(startup, Startup::Login);
            if !write_whole(&mut client.sock, &startup.reply()) {
                return false;
            }
        }
        let (n, _) = complete(client.buf.bytes());
        if n == 0 {
            return true;
        }
        if client.buf.bytes()[0] == b'X' {
            return false;
        }
        let s = match client.server {
            Some(s) => s,
            None => {
                let Some(s) = self.idle.pop() else {
                    if !client.queued {
                        client.queued = true;
                        self.queue.push_back(c);
                    }
                    return true;
                };
                client.server = Some(s);
                self.servers[s].client = Some(c);
                s
            }
        };
        let ok = write_whole(&mut self.servers[s].sock, &client.buf.bytes()[..n]);
        client.buf.consume(n);
        assert!(ok, "a server connection failed");
        true
    }

    /// Pass what server `s` answered to its client; at ReadyForQuery `I` with nothing more
    /// buffered, put the server back and serve the queue.
    fn server_work(&mut self, s: usize) {
        let server = &mut self.servers[s];
        let (n, ready) = complete(server.buf.bytes());
        if n == 0 {
            return;
        }
        let Some(c) = server.client else {
            server.buf.consume(n);
            return;
        };
        let mut client_failed = false;
        if let Some(client) = self.clients[c].as_mut() {
            client_failed = !write_whole(&mut client.sock, &server.buf.bytes()[..n]);
        }
        server.buf.consume(n);
        if ready != Some(b'I') || !server.buf.is_empty() {
            return;
        }
        server.client = None;
        if let Some(client) = self.clients[c].as_mut() {
            client.server = None;
        }
        self.idle.push(s);
        while !self.idle.is_empty() {
            let Some(w) = self.queue.pop_front() else {
                break;
            };
            if let Some(waiting) = self.clients[w].as_mut() {
                waiting.queued = false;
                if !self.client_work(w) {
                    self.close(w);
                }
            }
        }
        let more = self.clients[c].as_ref().is_some_and(|k| !k.buf.is_empty());
        if client_failed || (more && !self.client_work(c)) {
            self.close(c);
        }
    }

    fn close(&mut self, c: usize) {
        if let Some(client) = self.clients[c].take() {
            if let Some(s) = client.server {
                self.servers[s].client = None;
                self.idle.push(s);
            }
            self.queue.retain(|w| *w != c);
            self.free_slots.push(c);
        }
    }
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, upstream, size] = &args[..] else {
        eprintln!("usage: floor-mio LISTEN UPSTREAM POOL_SIZE");
        std::process::exit(2);
    };
    let listen = listen.parse().map_err(std::io::Error::other)?;
    let size: usize = size.parse().map_err(std::io::Error::other)?;
    let mut poll = Poll::new()?;
    let mut relay = Relay::default();
    for i in 0..size {
        let conn = server_login(upstream)?;
        conn.set_nonblocking(true)?;
        let mut sock = TcpStream::from_std(conn);
        poll.registry()
            .register(&mut sock, Token(SERVER | i), Interest::READABLE)?;
        relay.servers.push(Server {
            sock,
            buf: Buf::default(),
            client: None,
        });
        relay.idle.push(i);
    }
    let mut listener = TcpListener::bind(listen)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut events = Events::with_capacity(256);
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for event in &events {
            let token = event.token();
            if token == LISTENER {
                while let Ok((mut sock, _)) = listener.accept() {
                    sock.set_nodelay(true)?;
                    let c = relay.free_slots.pop().unwrap_or_else(|| {
                        relay.clients.push(None);
                        relay.clients.len() - 1
                    });
                    poll.registry()
                        .register(&mut sock, Token(c), Interest::READABLE)?;
                    relay.clients[c] = Some(Client {
                        sock,
                        buf: Buf::default(),
                        logged_in: false,
                        server: None,
                        queued: false,
                    });
                }
            } else if token.0 & SERVER != 0 {
                let s = token.0 & !SERVER;
                let server = &mut relay.servers[s];
                assert!(
                    read_available(&mut server.sock, &mut server.buf),
                    "a server connection closed"
                );
                relay.server_work(s);
            } else {
                let c = token.0;
                let Some(client) = relay.clients[c].as_mut() else {
                    continue;
                };
                let open = read_available(&mut client.sock, &mut client.buf);
                if !open || !relay.client_work(c) {
                    if let Some(client) = relay.clients[c].as_mut() {
                        let _ = poll.registry().deregister(&mut client.sock);
                    }
                    relay.close(c);
                }
            }
        }
    }
}
