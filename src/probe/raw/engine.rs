//! The sockets of raw diagnosis (the `raw-diagnosis` feature): see the module above.

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand_core::{OsRng, RngCore};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Unavailable;
use super::packet::{self, Key, PORT_BASE, PORT_COUNT, Proof};
use crate::core::diagnosis::Reply;

/// Pause between two raw SYNs, across every diagnosis running: at most 500 packets a second
/// leave this host for diagnosis, however many addresses fail (an auditor, never a scanner), and a
/// router's ICMP rate limit answers a spaced trace better than a burst.
const SEND_SPACING: Duration = Duration::from_millis(2);

struct Waiter {
    tag: usize,
    replies: mpsc::UnboundedSender<(usize, Reply)>,
}

/// The SYNs waiting for a reply, by flow and sequence number: the SYNs of one trace share one
/// flow (one source port), so routers that spread flows over parallel paths by their ports
/// send them all down the path the failing flow takes (Paris traceroute).
type Waiting = Mutex<HashMap<(Key, u32), Waiter>>;

/// Reads one family's packet into a reply to one of our SYNs, if it is one.
type Parser = fn(&[u8]) -> Option<(Key, Proof, Reply)>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Sends SYNs and hands each reply to the probe that waits for it.
pub struct RawProber {
    send_v4: Option<Mutex<Socket>>,
    send_v6: Option<Mutex<Socket>>,
    waiting: Arc<Waiting>,
    next_port: AtomicU16,
    /// Tells the receiving threads to end (they notice within [`RECEIVE_POLL`]).
    stop: Arc<AtomicBool>,
    /// When the next SYN may leave ([`SEND_SPACING`] after the last one).
    next_send: Mutex<Instant>,
}

/// How long a receiving thread blocks before it looks at `stop`.
const RECEIVE_POLL: Duration = Duration::from_millis(500);

impl Drop for RawProber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for RawProber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawProber")
            .field("ipv4", &self.send_v4.is_some())
            .field("ipv6", &self.send_v6.is_some())
            .finish_non_exhaustive()
    }
}

fn classify_open_error(error: &io::Error) -> Unavailable {
    if error.kind() == io::ErrorKind::PermissionDenied {
        Unavailable::NoCapability
    } else {
        Unavailable::Failed(error.to_string())
    }
}

/// The sending socket of one family: `IPPROTO_RAW`, so we write the IP header (and its TTL)
/// ourselves. A raw socket of protocol TCP would be handed a copy of every TCP segment the host
/// receives, cloned before any filter could drop it: `bench/raw-receive` measured that at 2 us
/// per segment of the whole host's traffic. `IPPROTO_RAW` sockets receive nothing.
fn sender(domain: Domain) -> io::Result<Socket> {
    let socket = Socket::new(domain, Type::RAW, Some(Protocol::from(IPPROTO_RAW)))?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Send-only raw sockets: the IP header is ours (`IP_HDRINCL`, `IPV6_HDRINCL` implied).
const IPPROTO_RAW: i32 = 255;

/// The receiving socket of one family: every IP packet of the host, filtered in the kernel.
fn receiver(ethertype: u16, filter: &[socket2::SockFilter]) -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::PACKET,
        Type::DGRAM,
        Some(Protocol::from(i32::from(ethertype.to_be()))),
    )?;
    socket.attach_filter(filter)?;
    socket.set_read_timeout(Some(RECEIVE_POLL))?;
    Ok(socket)
}

impl RawProber {
    /// Opens the sockets of both families (a family the host lacks is left out) and starts
    /// reading replies.
    pub fn open() -> Result<Self, Unavailable> {
        let send_v4 = sender(Domain::IPV4).map_err(|e| classify_open_error(&e))?;
        let receive_v4 = receiver(0x0800, &packet::filter_v4()).map_err(|e| classify_open_error(&e))?;
        let waiting: Arc<Waiting> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        // From here on, a failure must stop the threads already started.
        let stop_on_failure = |why: Unavailable| {
            stop.store(true, Ordering::Relaxed);
            why
        };
        spawn_receiver("raw-receive-v4", receive_v4, packet::parse_v4, &waiting, &stop)?;
        // A host without IPv6 probes IPv4 only; its IPv6 addresses fail as `unreachable` anyway.
        let send_v6 = match (sender(Domain::IPV6), receiver(0x86dd, &packet::filter_v6())) {
            (Ok(send), Ok(receive)) => {
                spawn_receiver("raw-receive-v6", receive, packet::parse_v6, &waiting, &stop)
                    .map_err(stop_on_failure)?;
                Some(Mutex::new(send))
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::info!(error = %e, "raw diagnosis: no IPv6 raw sockets; IPv6 addresses are not diagnosed");
                None
            }
        };
        Ok(Self {
            send_v4: Some(Mutex::new(send_v4)),
            send_v6,
            waiting,
            next_port: AtomicU16::new(u16::try_from(OsRng.next_u32() % u32::from(PORT_COUNT)).unwrap_or(0)),
            stop,
            next_send: Mutex::new(Instant::now()),
        })
    }

    /// A source port for a new flow of SYNs.
    pub fn new_flow(&self) -> u16 {
        PORT_BASE + self.next_port.fetch_add(1, Ordering::Relaxed) % PORT_COUNT
    }

    /// Sends one SYN from `local_port` to `destination` per TTL in `ttls`, each with its own
    /// random sequence number, and waits up to `wait` after the last for their replies: one entry
    /// per TTL, `None` where nothing came.
    pub async fn send(
        &self,
        source: IpAddr,
        local_port: u16,
        destination: SocketAddr,
        ttls: &[u8],
        wait: Duration,
    ) -> io::Result<Vec<Option<Reply>>> {
        let socket = match destination {
            SocketAddr::V4(_) => self.send_v4.as_ref(),
            SocketAddr::V6(_) => self.send_v6.as_ref(),
        }
        .ok_or_else(|| io::Error::new(io::ErrorKind::Unsupported, "no raw socket for this address family"))?;
        let key = Key {
            remote: destination.ip(),
            remote_port: destination.port(),
            local_port,
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut registered = Registered {
            waiting: &self.waiting,
            keys: Vec::with_capacity(ttls.len()),
        };
        let mut probes = Vec::with_capacity(ttls.len());
        for (tag, &ttl) in ttls.iter().enumerate() {
            probes.push((registered.register(key, tag, &tx), ttl));
        }
        for &(seq, ttl) in &probes {
            self.pace().await;
            let datagram = packet::syn_datagram(source, destination, local_port, seq, ttl);
            let target = SockAddr::from(SocketAddr::new(destination.ip(), 0));
            lock(socket).send_to(&datagram, &target)?;
        }
        drop(tx);
        let mut replies = vec![None; ttls.len()];
        let mut missing = ttls.len();
        let deadline = Instant::now() + wait;
        while missing > 0 {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((tag, reply))) => {
                    if replies[tag].is_none() {
                        replies[tag] = Some(reply);
                        missing -= 1;
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        Ok(replies)
    }
}

impl RawProber {
    /// Waits for this SYN's turn: one every [`SEND_SPACING`], across all diagnoses.
    async fn pace(&self) {
        let at = {
            let mut next = lock(&self.next_send);
            let at = (*next).max(Instant::now());
            *next = at + SEND_SPACING;
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

/// The probes of one batch, unregistered when the batch ends however it ends.
struct Registered<'a> {
    waiting: &'a Waiting,
    keys: Vec<(Key, u32)>,
}

impl Registered<'_> {
    /// Registers one SYN of flow `key` under a fresh random sequence number, and returns it.
    fn register(&mut self, key: Key, tag: usize, replies: &mpsc::UnboundedSender<(usize, Reply)>) -> u32 {
        let mut waiting = lock(self.waiting);
        loop {
            let seq = OsRng.next_u32();
            if let std::collections::hash_map::Entry::Vacant(slot) = waiting.entry((key, seq)) {
                slot.insert(Waiter {
                    tag,
                    replies: replies.clone(),
                });
                self.keys.push((key, seq));
                return seq;
            }
        }
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let mut waiting = lock(self.waiting);
        for key in &self.keys {
            waiting.remove(key);
        }
    }
}

fn spawn_receiver(
    name: &str,
    socket: Socket,
    parse: Parser,
    waiting: &Arc<Waiting>,
    stop: &Arc<AtomicBool>,
) -> Result<(), Unavailable> {
    let (waiting, stop) = (Arc::clone(waiting), Arc::clone(stop));
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let mut buffer = vec![0u8; 2048];
            let mut socket = &socket;
            while !stop.load(Ordering::Relaxed) {
                match socket.read(&mut buffer) {
                    Ok(length) => deliver(&waiting, parse(&buffer[..length])),
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "raw diagnosis: the receive socket failed; replies are no longer read");
                        return;
                    }
                }
            }
        })
        .map(drop)
        .map_err(|e| Unavailable::Failed(e.to_string()))
}

fn deliver(waiting: &Waiting, heard: Option<(Key, Proof, Reply)>) {
    let Some((key, proof, reply)) = heard else {
        return;
    };
    if let Some(waiter) = lock(waiting).get(&(key, proof.seq())) {
        let _ = waiter.replies.send((waiter.tag, reply));
    }
}
