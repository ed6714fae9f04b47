//! Raw-packet diagnosis of failing addresses: our own SYNs (pnet builds them, a raw IP socket
//! sends them with the TTL we choose) and the replies, read from packet sockets so the IP header
//! (TTL, hop limit, the ICMP's source) is there for both families.
//!
//! Why packet sockets for receiving and not pnet's transport channel: an IPv6 raw socket never
//! hands over the IPv6 header, so a reset's hop limit would need ancillary data that pnet does
//! not read. `AF_PACKET` in datagram mode gives the whole IP packet of both families, and the
//! classic BPF filter in `packet.rs` (our source ports, ICMP errors) keeps every other packet
//! of the host in the kernel. The sockets are `socket2`'s; each receiving one has a thread that
//! blocks in the kernel until a reply passes the filter (tokio's `AsyncFd` would need `unsafe`
//! to register a raw descriptor soundly, and two idle threads cost nothing).
//!
//! Needs `CAP_NET_RAW`; without it [`RawProber::open`] says so and everything else runs as before.

pub mod diagnose;
#[cfg(feature = "raw-diagnosis")]
mod engine;
#[cfg(feature = "raw-diagnosis")]
pub mod packet;

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};

#[cfg(feature = "raw-diagnosis")]
pub use engine::RawProber;

/// Why raw diagnosis is off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// This process does not hold `CAP_NET_RAW`.
    NoCapability,
    /// Raw sockets failed for another reason (the kernel's message).
    Failed(String),
    /// This build leaves raw diagnosis out (the `raw-diagnosis` cargo feature).
    NotBuilt,
}

impl Unavailable {
    /// The startup line: what is off and how to turn it on.
    pub fn explain(&self) -> String {
        match self {
            Self::NoCapability => "raw diagnosis off: this process lacks CAP_NET_RAW, so failing addresses are not traced and resets are not told apart. Enable it without running as root: `setcap cap_net_raw+ep /usr/bin/whitelist-audit`, `--cap-add NET_RAW` for the container, or `AmbientCapabilities=CAP_NET_RAW` in the systemd unit".to_string(),
            Self::Failed(why) => format!("raw diagnosis off: raw sockets failed ({why})"),
            Self::NotBuilt => "raw diagnosis off: this build leaves it out (cargo feature `raw-diagnosis`)".to_string(),
        }
    }
}

/// Raw diagnosis left out of the build: never opened, so never asked to send.
#[cfg(not(feature = "raw-diagnosis"))]
#[derive(Debug)]
pub struct RawProber;

#[cfg(not(feature = "raw-diagnosis"))]
impl RawProber {
    pub fn open() -> Result<Self, Unavailable> {
        Err(Unavailable::NotBuilt)
    }

    pub fn new_flow(&self) -> u16 {
        0
    }

    #[allow(clippy::unused_async)] // the real one awaits its replies
    pub async fn send(
        &self,
        _source: IpAddr,
        _local_port: u16,
        _destination: SocketAddr,
        _ttls: &[u8],
        _wait: std::time::Duration,
    ) -> io::Result<Vec<Option<crate::core::diagnosis::Reply>>> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            Unavailable::NotBuilt.explain(),
        ))
    }
}

/// The address this host sends from toward `destination`, as its routing table picks it (a
/// UDP socket's connect sends nothing).
pub fn source_for(destination: SocketAddr) -> io::Result<IpAddr> {
    let bind: SocketAddr = match destination {
        SocketAddr::V4(_) => "0.0.0.0:0".parse().expect("a socket address"),
        SocketAddr::V6(_) => "[::]:0".parse().expect("a socket address"),
    };
    let socket = UdpSocket::bind(bind)?;
    socket.connect(destination)?;
    Ok(socket.local_addr()?.ip())
}
