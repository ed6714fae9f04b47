//! The SSH binary packet protocol before any key is agreed (RFC 4253 sections 6 and 7): framing,
//! the server's `SSH_MSG_KEXINIT` and the few messages of a key exchange. Pure, bounded and total:
//! any input gives a packet, a request for more bytes or an error that says what was wrong.

use std::fmt;

use crate::config::ssh::is_algorithm_name;
use crate::core::ssh::ServerAlgorithms;

/// RFC 4253 section 6.1: every implementation handles packets of 35000 bytes; a server's
/// KEXINIT is one or two KiB. A length beyond this is not SSH.
pub const MAX_PACKET: usize = 35_000;
/// More algorithms in one list than any server has: OpenSSH knows about 20 ciphers.
pub const MAX_NAMES: usize = 128;

pub const MSG_DISCONNECT: u8 = 1;
pub const MSG_IGNORE: u8 = 2;
pub const MSG_UNIMPLEMENTED: u8 = 3;
pub const MSG_DEBUG: u8 = 4;
pub const MSG_KEXINIT: u8 = 20;
/// `SSH_MSG_KEX_ECDH_INIT` and _REPLY (RFC 5656 section 7.1; curve25519 uses the same numbers).
pub const MSG_KEX_ECDH_INIT: u8 = 30;
pub const MSG_KEX_ECDH_REPLY: u8 = 31;

/// What was wrong with the bytes, in words for `check`'s DETAIL column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub String);

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn error<T>(message: impl Into<String>) -> Result<T, WireError> {
    Err(WireError(message.into()))
}

/// The first whole packet in `buffer`: its payload and the bytes it took, or `None` if more
/// bytes are needed.
pub fn frame(buffer: &[u8]) -> Result<Option<(&[u8], usize)>, WireError> {
    let Some(header) = buffer.get(..5) else {
        return Ok(None);
    };
    let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let padding = header[4] as usize;
    if length > MAX_PACKET {
        return error(format!(
            "a packet length of {length} bytes (SSH allows {MAX_PACKET} before keys are agreed)"
        ));
    }
    if padding + 1 >= length {
        return error(format!(
            "a malformed packet: {padding} bytes of padding in a packet of {length}"
        ));
    }
    let Some(packet) = buffer.get(4..4 + length) else {
        return Ok(None);
    };
    Ok(Some((&packet[1..length - padding], 4 + length)))
}

/// A message received before the key exchange, as far as the probe cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    KexInit(ServerAlgorithms),
    /// `SSH_MSG_IGNORE`, _DEBUG, _UNIMPLEMENTED: skipped.
    Noise,
    Disconnect {
        code: u32,
        description: String,
    },
    Other(u8),
}

/// Reads one payload.
pub fn message(payload: &[u8]) -> Result<Message, WireError> {
    let mut r = Reader(payload);
    match r.byte()? {
        MSG_KEXINIT => kexinit(&mut r).map(Message::KexInit),
        MSG_IGNORE | MSG_DEBUG | MSG_UNIMPLEMENTED => Ok(Message::Noise),
        MSG_DISCONNECT => {
            let code = r.u32()?;
            let description = r.string()?;
            Ok(Message::Disconnect {
                code,
                description: printable(&description[..description.len().min(200)]),
            })
        }
        other => Ok(Message::Other(other)),
    }
}

const LIST_NAMES: [&str; 10] = [
    "kex_algorithms",
    "server_host_key_algorithms",
    "encryption_algorithms_client_to_server",
    "encryption_algorithms_server_to_client",
    "mac_algorithms_client_to_server",
    "mac_algorithms_server_to_client",
    "compression_algorithms_client_to_server",
    "compression_algorithms_server_to_client",
    "languages_client_to_server",
    "languages_server_to_client",
];

fn kexinit(r: &mut Reader<'_>) -> Result<ServerAlgorithms, WireError> {
    r.take(16)
        .map_err(|_| WireError("a KEXINIT cut short in its cookie".into()))?;
    let mut lists: Vec<Vec<String>> = Vec::with_capacity(10);
    for name in LIST_NAMES {
        lists.push(name_list(r, name)?);
    }
    // first_kex_packet_follows and the reserved word: a KEXINIT without them is cut short, but
    // every list is already known, so nothing is lost by being lenient.
    let _ = r.byte();
    let mut lists = lists.into_iter();
    let mut next = || lists.next().unwrap_or_default();
    let algorithms = ServerAlgorithms {
        kex: next(),
        host_key: next(),
        ciphers_client_to_server: next(),
        ciphers_server_to_client: next(),
        macs_client_to_server: next(),
        macs_server_to_client: next(),
        compression_client_to_server: next(),
        compression_server_to_client: next(),
    };
    Ok(algorithms)
}

fn name_list(r: &mut Reader<'_>, list: &str) -> Result<Vec<String>, WireError> {
    let raw = r
        .string()
        .map_err(|WireError(why)| WireError(format!("KEXINIT {list}: {why}")))?;
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    let count = raw.split(|&b| b == b',').count();
    if count > MAX_NAMES {
        return error(format!("KEXINIT {list} has {count} names (the limit is {MAX_NAMES})"));
    }
    raw.split(|&b| b == b',')
        .map(|name| {
            let text = std::str::from_utf8(name).ok().filter(|t| is_algorithm_name(t));
            match text {
                Some(text) => Ok(text.to_string()),
                None => error(format!(
                    "KEXINIT {list} has an invalid name `{}`",
                    printable(&name[..name.len().min(64)])
                )),
            }
        })
        .collect()
}

/// A server's `SSH_MSG_KEX_ECDH_REPLY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcdhReply<'a> {
    /// `K_S`: the host key blob.
    pub host_key: &'a [u8],
    /// `Q_S`: the server's ephemeral public key.
    pub server_public: &'a [u8],
    pub signature: &'a [u8],
}

/// Reads an `SSH_MSG_KEX_ECDH_REPLY` payload.
pub fn ecdh_reply(payload: &[u8]) -> Result<EcdhReply<'_>, WireError> {
    let mut r = Reader(payload);
    let kind = r.byte()?;
    if kind != MSG_KEX_ECDH_REPLY {
        return error(format!("message {kind} where the key exchange reply was expected"));
    }
    Ok(EcdhReply {
        host_key: r.string()?,
        server_public: r.string()?,
        signature: r.string()?,
    })
}

/// Frames `payload` as a packet before keys are agreed: no MAC, padding to 8 bytes. The padding
/// needs no randomness while nothing is encrypted.
pub fn packet(payload: &[u8]) -> Vec<u8> {
    let mut padding = 8 - (5 + payload.len()) % 8;
    if padding < 4 {
        padding += 8;
    }
    let length = u32::try_from(1 + payload.len() + padding).expect("our packets are small");
    let mut out = Vec::with_capacity(4 + length as usize);
    out.extend_from_slice(&length.to_be_bytes());
    out.push(u8::try_from(padding).expect("padding < 16"));
    out.extend_from_slice(payload);
    out.resize(out.len() + padding, 0);
    out
}

/// An `SSH_MSG_KEXINIT` payload with these ten lists.
pub fn kexinit_payload(cookie: [u8; 16], lists: &[Vec<String>; 10]) -> Vec<u8> {
    let mut out = vec![MSG_KEXINIT];
    out.extend_from_slice(&cookie);
    for list in lists {
        put_string(&mut out, list.join(",").as_bytes());
    }
    out.push(0);
    out.extend_from_slice(&0u32.to_be_bytes());
    out
}

/// The ten lists of a server's KEXINIT, as a client would echo them (languages empty).
pub fn lists_of(algorithms: &ServerAlgorithms) -> [Vec<String>; 10] {
    [
        algorithms.kex.clone(),
        algorithms.host_key.clone(),
        algorithms.ciphers_client_to_server.clone(),
        algorithms.ciphers_server_to_client.clone(),
        algorithms.macs_client_to_server.clone(),
        algorithms.macs_server_to_client.clone(),
        algorithms.compression_client_to_server.clone(),
        algorithms.compression_server_to_client.clone(),
        Vec::new(),
        Vec::new(),
    ]
}

/// `SSH_MSG_KEX_ECDH_INIT` with our ephemeral public key.
pub fn ecdh_init_payload(client_public: &[u8]) -> Vec<u8> {
    let mut out = vec![MSG_KEX_ECDH_INIT];
    put_string(&mut out, client_public);
    out
}

/// An SSH `string`: a length and the bytes.
pub fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    let length = u32::try_from(bytes.len()).expect("strings we write are small");
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(bytes);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if n > self.0.len() {
            return error(format!("a field of {n} bytes where {} are left", self.0.len()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self) -> Result<&'a [u8], WireError> {
        let length = self.u32()? as usize;
        self.take(length)
    }
}

/// Bytes a peer sent, as text safe to show: anything but printable ASCII becomes a dot.
pub(crate) fn printable(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lists(spec: [&str; 10]) -> [Vec<String>; 10] {
        spec.map(|l| l.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect())
    }

    const OPENSSH_9_2: [&str; 10] = [
        "sntrup761x25519-sha512@openssh.com,curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256,kex-strict-s-v00@openssh.com",
        "rsa-sha2-512,rsa-sha2-256,ecdsa-sha2-nistp256,ssh-ed25519",
        "chacha20-poly1305@openssh.com,aes128-ctr,aes256-gcm@openssh.com",
        "chacha20-poly1305@openssh.com,aes128-ctr,aes256-gcm@openssh.com",
        "umac-64-etm@openssh.com,hmac-sha2-256-etm@openssh.com,hmac-sha1",
        "umac-64-etm@openssh.com,hmac-sha2-256-etm@openssh.com,hmac-sha1",
        "none,zlib@openssh.com",
        "none,zlib@openssh.com",
        "",
        "",
    ];

    fn kexinit_packet(spec: [&str; 10]) -> Vec<u8> {
        packet(&kexinit_payload([7; 16], &lists(spec)))
    }

    #[test]
    fn a_kexinit_round_trips_through_framing_and_parsing() {
        let bytes = kexinit_packet(OPENSSH_9_2);
        assert_eq!(bytes.len() % 8, 0);
        let (payload, used) = frame(&bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        let Message::KexInit(algorithms) = message(payload).unwrap() else {
            panic!("not a KEXINIT")
        };
        assert_eq!(lists_of(&algorithms)[..8], lists(OPENSSH_9_2)[..8]);
        assert_eq!(algorithms.host_key[3], "ssh-ed25519");
    }

    #[test]
    fn every_split_point_asks_for_more_and_never_errs() {
        let bytes = kexinit_packet(OPENSSH_9_2);
        for cut in 0..bytes.len() {
            assert_eq!(frame(&bytes[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn a_huge_length_is_refused_before_waiting_for_it() {
        let mut bytes = vec![0x40, 0, 0, 0, 4];
        bytes.extend_from_slice(b"junk");
        let err = frame(&bytes).unwrap_err();
        assert!(err.0.contains("1073741824"), "{err}");
    }

    #[test]
    fn text_after_the_identification_is_not_a_packet() {
        // "HTTP" read as a length is 1.2 GB.
        assert!(frame(b"HTTP/1.1 400 Bad Request\r\n").is_err());
        // Padding that leaves no payload.
        assert!(frame(&[0, 0, 0, 8, 8, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn a_name_list_without_end_is_cut_short() {
        let mut payload = vec![MSG_KEXINIT];
        payload.extend_from_slice(&[0; 16]);
        payload.extend_from_slice(&5000u32.to_be_bytes());
        payload.extend_from_slice(b"curve25519-sha256");
        let err = message(&payload).unwrap_err();
        assert!(
            err.0.starts_with("KEXINIT kex_algorithms: a field of 5000 bytes"),
            "{err}"
        );
    }

    #[test]
    fn ten_thousand_algorithms_are_refused() {
        let many = vec!["a"; 10_000].join(",");
        let mut spec = OPENSSH_9_2;
        spec[2] = &many;
        let err = message(&kexinit_payload([0; 16], &lists(spec))).unwrap_err();
        assert_eq!(
            err.0,
            "KEXINIT encryption_algorithms_client_to_server has 10000 names (the limit is 128)"
        );
    }

    #[test]
    fn invalid_names_are_named() {
        let mut payload = vec![MSG_KEXINIT];
        payload.extend_from_slice(&[0; 16]);
        put_string(&mut payload, b"curve25519-sha256,,x");
        assert!(message(&payload).unwrap_err().0.contains("invalid name ``"));
        let mut payload = vec![MSG_KEXINIT];
        payload.extend_from_slice(&[0; 16]);
        put_string(&mut payload, b"curve25519 sha256\x01");
        assert!(
            message(&payload)
                .unwrap_err()
                .0
                .contains("invalid name `curve25519 sha256.`")
        );
    }

    #[test]
    fn disconnect_and_noise_are_told_apart() {
        let mut payload = vec![MSG_DISCONNECT];
        payload.extend_from_slice(&2u32.to_be_bytes());
        put_string(&mut payload, b"Too many connections\n");
        put_string(&mut payload, b"");
        assert_eq!(
            message(&payload).unwrap(),
            Message::Disconnect {
                code: 2,
                description: "Too many connections.".into()
            }
        );
        assert_eq!(message(&[MSG_IGNORE, 0, 0, 0, 0]).unwrap(), Message::Noise);
        assert_eq!(message(&[90]).unwrap(), Message::Other(90));
        assert!(message(&[]).is_err());
    }

    /// 20,000 cases per run; `PROPTEST_CASES=N` for a longer run (the README says how long one
    /// ran clean).
    fn cases() -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(20_000)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(cases()))]

        #[test]
        fn no_input_makes_the_parsers_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            if let Ok(Some((payload, used))) = frame(&bytes) {
                proptest::prop_assert!(used <= bytes.len() && payload.len() < used);
            }
            let _ = message(&bytes);
            let _ = ecdh_reply(&bytes);
        }

        #[test]
        fn mutated_kexinits_never_panic(
            flips in proptest::collection::vec((0usize..2000, proptest::prelude::any::<u8>()), 1..8),
        ) {
            let mut payload = kexinit_payload([1; 16], &lists(OPENSSH_9_2));
            for (at, value) in flips {
                let at = at % payload.len();
                payload[at] = value;
            }
            let _ = message(&payload);
        }
    }
}
