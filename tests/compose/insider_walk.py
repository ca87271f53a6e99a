"""What an insider in one container of the compose stack can reach: run INSIDE the container.

`docker compose exec -T SERVICE python3 -c "$(cat insider_walk.py)"` (or `run`) with a JSON
request on stdin; prints one JSON report on stdout. Standard library only (every image of the
stack has a python3). As the container's default user it:

- lists the Docker volumes mounted in the container, read-only or not (/proc/self/mountinfo);
- walks the whole file system (not /proc, /sys, /dev) for files named like a secret or like a
  service's data (a private key, a secret id, Vault's unseal key and root token, a Postgres data
  directory, Vault's storage, an audit trail) and for sockets, and opens each: "read" or
  "denied" (there, but cannot be opened or connected to);
- looks for each secret VALUE of the request in the environment and command line of every
  process it can see (/proc/*/environ, /proc/*/cmdline), in every file under every mount (volumes,
  bind mounts, tmpfs) and in the files the request lists (the container's writable layer);
- tries every Unix socket it finds and each loopback TCP port of the request;
- tries a TCP connection to each network endpoint of the request (another service's port, by
  its name and by each of its addresses), all at once and while the rest runs, 0.5 s each;
- says which process, IPC and network namespaces it is in (shared with no other container,
  another container's processes, their /proc/PID/environ included, are not even visible);
- tries the act NET_RAW allows: opening a raw packet socket (ARP frames on the bridge, which
  carries OpenBao's plain HTTP: the spoofing README's "none can ARP-spoof that bridge" rules out)
  and a raw ICMP socket, "allowed" or "denied"; and whether CAP_NET_RAW is in its effective and
  bounding capability sets (in the bounding set, a process that became root could get it).

The report names secrets by their label, never by value: it is safe to print.
"""

from __future__ import annotations

import errno
import fnmatch
import json
import os
import re
import socket
import stat
import sys
from concurrent.futures import Future, ThreadPoolExecutor

# File names of secrets and of services' data; a match is reported with its path.
SECRET_FILE_NAMES = (
    "*-key.pem",  # every TLS private key, the CAs' included
    "*secret-id",  # AppRole secret ids
    "*-sqs-credentials",  # an SQS identity's key (sqs-init hands them out)
    "unseal-key",
    "root-token",
    "init.txt",  # `vault operator init` output, if it were left behind
    ".vault-token",
    ".env",
    "compose.env",
    "PG_VERSION",  # a Postgres data directory
    "vault.db",  # Vault's raft storage
    "raft.db",
    "audit.log",  # Vault's audit device
    "checkpoints.jsonl",  # the vault service's exported audit checkpoints
    "docker.sock",
    "containerd.sock",
)
SKIPPED_TREES = ("/proc", "/sys", "/dev")
NAMESPACES = ("pid", "ipc", "net")  # another container's processes, shared memory, loopback
MAX_SCANNED_BYTES = 64 * 1024 * 1024  # per file; the stack's data files are far smaller
ETH_P_ARP = 0x0806
# The raw sockets NET_RAW opens: name -> (family, type, protocol).
RAW_SOCKETS = {
    "packet": (socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)),  # send/receive ARP frames
    "icmp": (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
}
CAP_NET_RAW = 13  # bit in /proc/self/status' Cap* masks
CONNECT_TIMEOUT = 0.5  # seconds: a peer on a shared bridge answers within a millisecond; a dropped SYN waits it out


def try_open(path: str) -> str | None:
    """'read' or 'denied' for a path that exists; None when there is nothing there."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError:
        return "denied"  # a directory on the way refuses to be searched: the path is not reachable
    if stat.S_ISSOCK(mode):
        return "read" if connects(path) else "denied"
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError:
        return "denied"
    return "read"


def connects(path: str) -> bool:
    """Whether a Unix socket accepts a connection from us."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(2)
        try:
            client.connect(path)
        except OSError:
            return False
    return True


def is_socket(entry: os.DirEntry[str]) -> bool:
    """Whether the entry is a Unix socket (a regular file, directory or link is asked no more)."""
    if entry.is_file(follow_symlinks=False) or entry.is_symlink():
        return False
    try:
        return stat.S_ISSOCK(entry.stat(follow_symlinks=False).st_mode)
    except OSError:
        return False


def named_like_secrets() -> dict[str, str]:
    """Every file named like a secret or a data file, and every socket: path -> read/denied."""
    secret_name = re.compile("|".join(fnmatch.translate(pattern) for pattern in SECRET_FILE_NAMES))
    found: dict[str, str] = {}
    pending = ["/"]
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except OSError:
            continue  # a directory we may not list: what is in it is refused to us
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if entry.path not in SKIPPED_TREES:
                    pending.append(entry.path)
            elif secret_name.match(entry.name) or is_socket(entry):
                found[entry.path] = try_open(entry.path) or "denied"
    return found


def mounts() -> list[tuple[str, str, str]]:
    """(mount point, what is mounted, ro/rw) of everything besides the image, /proc etc. aside."""
    found = []
    with open("/proc/self/mountinfo") as table:
        for line in table:
            fields = line.split()
            point, source = (field.replace("\\040", " ") for field in (fields[4], fields[3]))
            if point != "/" and not point.startswith(SKIPPED_TREES):
                found.append((point, source, fields[5].split(",")[0]))
    return found


def volumes() -> dict[str, list[str]]:
    """Docker volumes mounted here: mount point -> [volume name, ro/rw] (docker's volumes/NAME/_data)."""
    found = {}
    for point, source, mode in mounts():
        parts = source.rstrip("/").split("/")
        if len(parts) >= 3 and parts[-1] == "_data" and parts[-3] == "volumes":
            found[point] = [parts[-2], mode]
    return found


def files_under(paths: list[str]) -> list[str]:
    """The regular files at or under `paths` that we can see."""
    files = []
    for path in paths:
        if os.path.isfile(path):
            files.append(path)
        for top, _, names in os.walk(path):
            files.extend(os.path.join(top, name) for name in names)
    return sorted(set(files))


def process_files() -> list[str]:
    """Environment and command line of every process this container shows us."""
    pids = [entry for entry in os.listdir("/proc") if entry.isdigit()]
    return [f"/proc/{pid}/{what}" for pid in pids for what in ("environ", "cmdline")]


def values_found(needles: dict[str, list[str]], paths: list[str]) -> dict[str, list[str]]:
    """label -> the readable paths holding any of its needles."""
    encoded = {label: [n.encode() for n in values if n] for label, values in needles.items()}
    hits: dict[str, list[str]] = {}
    for path in paths:
        try:
            if os.path.getsize(path) > MAX_SCANNED_BYTES:
                continue
            with open(path, "rb") as handle:
                data = handle.read(MAX_SCANNED_BYTES)
        except OSError:
            continue  # not readable by us: nothing leaks from it
        for label, values in encoded.items():
            if any(value in data for value in values):
                hits.setdefault(label, []).append(path)
    return hits


def open_ports(ports: list[int]) -> list[int]:
    """Which of `ports` accept a TCP connection on this container's loopback."""
    reachable = []
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as client:
            client.settimeout(2)
            if client.connect_ex(("127.0.0.1", port)) == 0:
                reachable.append(port)
    return reachable


def connects_to(host: str, port: int) -> bool:
    """Whether `host:port` accepts a TCP connection from here (a name that does not resolve: no)."""
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT).close()
    except OSError:
        return False
    return True


Attempt = tuple[str, str, "Future[bool]"]  # label, host, whether it connected


def start_connecting(endpoints: list[list[str | int]]) -> list[Attempt]:
    """Start a connection to every [label, host, port] at once, each in a thread of its own."""
    pool = ThreadPoolExecutor(max_workers=max(1, len(endpoints)))
    attempts = [
        (str(label), str(host), pool.submit(connects_to, str(host), int(port))) for label, host, port in endpoints
    ]
    pool.shutdown(wait=False)
    return attempts


def reached(attempts: list[Attempt]) -> dict[str, list[str]]:
    """label -> the hosts (a name, addresses) on which the port accepted the connection."""
    found: dict[str, list[str]] = {}
    for label, host, attempt in attempts:
        if attempt.result():
            found.setdefault(label, []).append(host)
    return found


def namespaces() -> dict[str, str]:
    """The process, IPC and network namespaces we are in (e.g. 'pid:[4026532385]')."""
    return {kind: os.readlink(f"/proc/self/ns/{kind}") for kind in NAMESPACES}


def raw_sockets() -> dict[str, str]:
    """Each raw socket of RAW_SOCKETS: "allowed" (it opened), "denied" (EPERM), or the errno's name."""
    outcome = {}
    for name, (family, kind, protocol) in RAW_SOCKETS.items():
        try:
            socket.socket(family, kind, protocol).close()
        except PermissionError:
            outcome[name] = "denied"
        except OSError as error:  # e.g. EAFNOSUPPORT: neither allowed nor shown denied
            outcome[name] = errno.errorcode.get(error.errno or 0, str(error.errno))
        else:
            outcome[name] = "allowed"
    return outcome


def net_raw_capability() -> dict[str, bool]:
    """Whether CAP_NET_RAW is in our effective ("CapEff") and bounding ("CapBnd") sets."""
    with open("/proc/self/status") as status:
        masks = dict(line.split(":", 1) for line in status if line.startswith("Cap"))
    return {name: bool(int(masks[name], 16) >> CAP_NET_RAW & 1) for name in ("CapEff", "CapBnd")}


def main() -> None:
    """Read the request from stdin, print the report."""
    request = json.load(sys.stdin)
    attempts = start_connecting(request.get("endpoints", []))  # they run while the walk does
    scanned = files_under([point for point, _, _ in mounts()] + request.get("scan", [])) + process_files()
    report = {
        "uid": os.getuid(),
        "namespaces": namespaces(),
        "volumes": volumes(),
        "files": named_like_secrets(),
        "values": values_found(request.get("values", {}), scanned),
        "ports": open_ports(request.get("ports", [])),
        "raw_sockets": raw_sockets(),
        "net_raw": net_raw_capability(),
        "reached": reached(attempts),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
