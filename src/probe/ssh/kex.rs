//! Just enough of a key exchange to learn which host key an address holds, and to know it holds
//! it: the server signs the exchange hash with that key (RFC 4253 section 8, RFC 5656, RFC 8731).
//! The crypto is the `RustCrypto` and dalek crates'; this file only arranges their inputs.

use rand_core::OsRng;
use sha2::{Digest, Sha256};
use signature::Verifier;
use ssh_key::{HashAlg, PublicKey, Signature};

use super::wire::{EcdhReply, put_string};
use crate::core::ssh::{HostKey, ServerAlgorithms};

/// The key exchanges we can complete, in our order of preference. All three hash with SHA-256.
const KEX_METHODS: [(&str, Curve); 3] = [
    ("curve25519-sha256", Curve::X25519),
    ("curve25519-sha256@libssh.org", Curve::X25519),
    // FIPS-mode servers (RHEL, some managed SFTP services) offer no curve25519.
    ("ecdh-sha2-nistp256", Curve::NistP256),
];

/// The host key algorithms we can verify, in the OpenSSH client's default order, so the key we
/// report is the one a fresh `ssh` would record in `known_hosts`.
const HOST_KEY_ALGORITHMS: [&str; 6] = [
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "rsa-sha2-256",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Curve {
    X25519,
    NistP256,
}

/// What we will ask the server for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub kex: &'static str,
    pub host_key: &'static str,
    curve: Curve,
}

/// Picks a key exchange and a host key algorithm the server offers, or says why none fits.
pub fn plan(server: &ServerAlgorithms) -> Result<Plan, String> {
    let offers = |list: &[String], name: &str| list.iter().any(|n| n == name);
    let Some(&(kex, curve)) = KEX_METHODS.iter().find(|(name, _)| offers(&server.kex, name)) else {
        return Err(format!(
            "host key not read: the server offers no key exchange the probe completes ({})",
            KEX_METHODS.map(|(name, _)| name).join(", ")
        ));
    };
    let Some(&host_key) = HOST_KEY_ALGORITHMS.iter().find(|name| offers(&server.host_key, name)) else {
        return Err(format!(
            "host key not read: the server offers no host key algorithm the probe verifies ({})",
            HOST_KEY_ALGORITHMS.join(", ")
        ));
    };
    Ok(Plan { kex, host_key, curve })
}

/// Our half of the exchange.
pub enum Ephemeral {
    X25519(x25519_dalek::EphemeralSecret),
    NistP256(p256::ecdh::EphemeralSecret),
}

impl Ephemeral {
    pub fn new(plan: Plan) -> Self {
        match plan.curve {
            Curve::X25519 => Self::X25519(x25519_dalek::EphemeralSecret::random_from_rng(OsRng)),
            Curve::NistP256 => Self::NistP256(p256::ecdh::EphemeralSecret::random(&mut OsRng)),
        }
    }

    /// `Q_C` as it goes on the wire.
    pub fn public(&self) -> Vec<u8> {
        match self {
            Self::X25519(secret) => x25519_dalek::PublicKey::from(secret).as_bytes().to_vec(),
            Self::NistP256(secret) => p256::EncodedPoint::from(secret.public_key()).as_bytes().to_vec(),
        }
    }

    /// K, big-endian, from the server's public key.
    fn shared(self, server_public: &[u8]) -> Result<Vec<u8>, String> {
        match self {
            Self::X25519(secret) => {
                let bytes: [u8; 32] = server_public
                    .try_into()
                    .map_err(|_| format!("a curve25519 public key of {} bytes", server_public.len()))?;
                let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(bytes));
                // RFC 8731 section 3: an all-zero result means a small-order point: abort.
                if !shared.was_contributory() {
                    return Err("a curve25519 public key of small order".into());
                }
                Ok(shared.as_bytes().to_vec())
            }
            Self::NistP256(secret) => {
                let public = p256::PublicKey::from_sec1_bytes(server_public)
                    .map_err(|_| "a nistp256 public key that is not on the curve".to_string())?;
                Ok(secret.diffie_hellman(&public).raw_secret_bytes().to_vec())
            }
        }
    }
}

/// What both sides sent before the reply, hashed into the exchange hash.
pub struct Transcript<'a> {
    /// `V_C`, `V_S`: the identification lines without CR LF.
    pub client_id: &'a [u8],
    pub server_id: &'a [u8],
    /// `I_C`, `I_S`: the KEXINIT payloads.
    pub client_kexinit: &'a [u8],
    pub server_kexinit: &'a [u8],
}

/// Checks the server's reply: computes K and the exchange hash H, and verifies the host key's
/// signature over H. The key is reported only when the signature holds.
pub fn verify(
    plan: Plan,
    transcript: &Transcript<'_>,
    ephemeral: Ephemeral,
    reply: &EcdhReply<'_>,
) -> Result<HostKey, String> {
    let client_public = ephemeral.public();
    let shared = ephemeral.shared(reply.server_public)?;
    let mut hashed = Vec::with_capacity(2048);
    for part in [
        transcript.client_id,
        transcript.server_id,
        transcript.client_kexinit,
        transcript.server_kexinit,
        reply.host_key,
        &client_public,
        reply.server_public,
    ] {
        put_string(&mut hashed, part);
    }
    put_mpint(&mut hashed, &shared);
    let exchange_hash = Sha256::digest(&hashed);
    let key = PublicKey::from_bytes(reply.host_key).map_err(|e| format!("a host key the probe cannot read: {e}"))?;
    let key_type = key.algorithm().as_str().to_string();
    let expected_type = if plan.host_key.starts_with("rsa-sha2-") {
        "ssh-rsa"
    } else {
        plan.host_key
    };
    if key_type != expected_type {
        return Err(format!("a {key_type} host key where {} was agreed", plan.host_key));
    }
    let signature =
        Signature::try_from(reply.signature).map_err(|e| format!("a host key signature the probe cannot read: {e}"))?;
    let signature = full_length_rsa(&key, signature)?;
    if signature.algorithm().as_str() != plan.host_key {
        return Err(format!(
            "a {} signature where {} was agreed",
            signature.algorithm().as_str(),
            plan.host_key
        ));
    }
    Verifier::verify(key.key_data(), &exchange_hash, &signature)
        .map_err(|_| "the host key's signature over the exchange does not verify: not the key's holder".to_string())?;
    Ok(HostKey {
        key_type,
        algorithm: plan.host_key.to_string(),
        fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
    })
}

/// RSA keys the probe verifies at most: the `rsa` crate's limit.
const MAX_RSA_BITS: usize = 4096;

/// An RSA signature as long as the key's modulus. Some servers drop its leading zero bytes
/// (one signature in 256); OpenSSH pads them back, and so do we, or such a server would fail
/// now and then.
fn full_length_rsa(key: &PublicKey, signature: Signature) -> Result<Signature, String> {
    let Some(rsa) = key.key_data().rsa() else {
        return Ok(signature);
    };
    let modulus = rsa.n.as_positive_bytes().map_or(0, <[u8]>::len);
    if modulus * 8 > MAX_RSA_BITS {
        return Err(format!(
            "an RSA host key of {} bits; the probe verifies up to {MAX_RSA_BITS}",
            modulus * 8
        ));
    }
    let data = signature.as_bytes();
    if data.is_empty() || data.len() >= modulus {
        return Ok(signature);
    }
    let mut padded = vec![0u8; modulus - data.len()];
    padded.extend_from_slice(data);
    Signature::new(signature.algorithm(), padded)
        .map_err(|e| format!("a host key signature the probe cannot read: {e}"))
}

/// An SSH `mpint` of a non-negative big-endian number.
fn put_mpint(out: &mut Vec<u8>, big_endian: &[u8]) {
    let first = big_endian.iter().position(|&b| b != 0).unwrap_or(big_endian.len());
    let digits = &big_endian[first..];
    let mut bytes = Vec::with_capacity(digits.len() + 1);
    if digits.first().is_some_and(|&b| b & 0x80 != 0) {
        bytes.push(0);
    }
    bytes.extend_from_slice(digits);
    put_string(out, &bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(kex: &[&str], host_key: &[&str]) -> ServerAlgorithms {
        ServerAlgorithms {
            kex: kex.iter().map(ToString::to_string).collect(),
            host_key: host_key.iter().map(ToString::to_string).collect(),
            ..ServerAlgorithms::default()
        }
    }

    #[test]
    fn the_plan_follows_our_order_not_the_servers() {
        let p = plan(&server(
            &["ecdh-sha2-nistp256", "curve25519-sha256@libssh.org"],
            &["rsa-sha2-512", "ssh-ed25519"],
        ))
        .unwrap();
        assert_eq!((p.kex, p.host_key), ("curve25519-sha256@libssh.org", "ssh-ed25519"));
        let fips = plan(&server(&["ecdh-sha2-nistp256"], &["rsa-sha2-256"])).unwrap();
        assert_eq!((fips.kex, fips.host_key), ("ecdh-sha2-nistp256", "rsa-sha2-256"));
        assert!(
            plan(&server(&["diffie-hellman-group14-sha256"], &["ssh-ed25519"]))
                .unwrap_err()
                .contains("no key exchange")
        );
        assert!(
            plan(&server(&["curve25519-sha256"], &["ssh-rsa", "ssh-dss"]))
                .unwrap_err()
                .contains("no host key algorithm")
        );
    }

    #[test]
    fn a_short_rsa_signature_is_padded_to_the_modulus() {
        // A throwaway 2048-bit key: the padding depends on its length only.
        let key = PublicKey::from_openssh("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDMoLmpc7MwlcTl7/kvgONqyi9LPHRYsMU2HcJuPTglRHkQzILCJt09evgFfzxvRRQHzfNJeOpsNsCIKtdxsvOX319z5Ydvoo0SsRPCPR0eZ4D+FhA61BlcR95WjDGlYlcAmI5yvFZu4rToowkQyzUsfjXBpj0cZYTOu+1AK2oGsgjeZunTUCLv9L7uS8jd8IHeAl4DShBVeWCEfWxxm69IuPkjqKnHNJD52Ahd7aZ7ibH0Vyy8R4xcCAuRvVZYTBPX6/3cDEk8ND7BngvotHmxowceOgUfo0ywCIAlAwmWmWA7gS0dsForpsW7j0jPnGWUY9pzFUTbahv+QrYQ9SXp").unwrap();
        let algorithm = ssh_key::Algorithm::Rsa {
            hash: Some(HashAlg::Sha512),
        };
        let short = Signature::new(algorithm.clone(), vec![7u8; 255]).unwrap();
        let padded = full_length_rsa(&key, short).unwrap();
        assert_eq!(padded.as_bytes().len(), 256);
        assert_eq!((padded.as_bytes()[0], padded.as_bytes()[1]), (0, 7));
        let whole = Signature::new(algorithm, vec![7u8; 256]).unwrap();
        assert_eq!(full_length_rsa(&key, whole.clone()).unwrap(), whole);
    }

    #[test]
    fn mpints_are_minimal_and_positive() {
        let mpint = |bytes: &[u8]| {
            let mut out = Vec::new();
            put_mpint(&mut out, bytes);
            out
        };
        assert_eq!(mpint(&[0, 0, 0x12, 0x34]), vec![0, 0, 0, 2, 0x12, 0x34]);
        assert_eq!(mpint(&[0x80, 1]), vec![0, 0, 0, 3, 0, 0x80, 1]);
        assert_eq!(mpint(&[0, 0]), vec![0, 0, 0, 0]);
    }
}
