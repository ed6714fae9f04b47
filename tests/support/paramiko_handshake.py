"""Runs paramiko's SSH handshake against HOST PORT and says whether it got through.

Usage: paramiko_handshake.py HOST PORT

Only the transport is started (`Transport(sock).start_client(timeout=5)`): version exchange,
KEXINIT negotiation and the key exchange, up to NEWKEYS (checked: the server's host key is
known only once the key exchange is done). No authentication is tried, no host key
is checked and nothing is read from ~/.ssh. Prints `ok` (exit 0) or `fail: <exception>` (exit 1)
on standard output; the first line on standard error names the paramiko version, so the harness
can tell which venv it ran.
"""

import socket
import sys
import warnings

# paramiko 2.12 imports ciphers that newer `cryptography` releases deprecate; the warnings are
# noise in a failure message.
warnings.simplefilter("ignore")

import paramiko  # noqa: E402


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: paramiko_handshake.py HOST PORT", file=sys.stderr)
        return 2
    host, port = sys.argv[1], int(sys.argv[2])
    print(f"paramiko {paramiko.__version__}", file=sys.stderr, flush=True)
    try:
        sock = socket.create_connection((host, port), timeout=5)
    except OSError as error:
        print(f"fail: connect: {error}", flush=True)
        return 1
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=5)
    except Exception as error:  # noqa: BLE001 - every failure is reported, none is expected
        transport.close()
        print(f"fail: {type(error).__name__}: {error}", flush=True)
        return 1
    # start_client returns quietly when its timeout runs out mid-negotiation; the server's host
    # key is known only once the key exchange is done (get_remote_server_key raises otherwise).
    try:
        transport.get_remote_server_key()
    except paramiko.SSHException:
        transport.close()
        print("fail: the key exchange did not finish within 5 s", flush=True)
        return 1
    transport.close()
    print("ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
