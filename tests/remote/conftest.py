"""A second libvirt host for the tests: its own network and mount namespaces, reached only over a
veth pair the fixture creates (deploy/libvirt/remote-up.sh), with SASL (password) on TCP and
client certificates (key-based) on TLS. Its pool, domains and logs live on tmpfs mounts only its
own processes see: the worker can reach them through libvirt's API alone.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UP = REPO / "deploy" / "libvirt" / "remote-up.sh"
DOWN = REPO / "deploy" / "libvirt" / "remote-down.sh"
PKI = REPO / "deploy" / "libvirt" / "remote-pki.sh"
PREFIX = "cvr-"  # every libvirt object these tests make (domains, pools, volumes)
USER = "cvr-worker"
TCP_PORT, TLS_PORT, SSH_PORT = 16599, 16514, 16522


@dataclass
class RemoteHost:
    addr: str
    tcp_uri: str  # SASL username/password
    tls_uri: str  # client certificate
    user: str
    password_env: str  # the password lives in this env var: credentials_ref "env:<it>"
    pki_client: Path  # libvirt pkipath layout for the worker
    state: Path
    libvirtd_pid: int
    pool: str = PREFIX + "pool"
    pool_path: str = "/var/lib/libvirt/cvr-pool"  # on the remote's private tmpfs

    def sees(self, path: str) -> bool:
        """Whether ``path`` exists in the remote host's mount namespace."""
        return (
            subprocess.run(
                ["nsenter", "-t", str(self.libvirtd_pid), "-m", "--", "test", "-e", path], check=False
            ).returncode
            == 0
        )


def _free_subnet() -> ipaddress.IPv4Network:
    """A /30 no interface of this machine uses: the veth pair is ours alone."""
    used = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=True).stdout
    for third in range(16, 64):
        net = ipaddress.ip_network(f"10.231.{third}.0/30")
        if not any(f" {h}/" in used for h in net.hosts()):
            return net
    raise RuntimeError("no free 10.231.x.0/30 for the remote host's veth pair")


@pytest.fixture(scope="session")
def remote_host(tmp_path_factory) -> Iterator[RemoteHost]:
    work = tmp_path_factory.mktemp("remote-host")
    tag = uuid.uuid4().hex[:4]
    net = _free_subnet()
    host_addr, addr = (str(h) for h in net.hosts())
    env = dict(
        os.environ,
        CV_REMOTE_DIR=str(work / "state"),
        CV_REMOTE_NS=f"{PREFIX}{tag}",
        CV_REMOTE_VETH=f"cvr{tag}",
        CV_REMOTE_HOST_ADDR=host_addr,
        CV_REMOTE_ADDR=addr,
        CV_REMOTE_TCP_PORT=str(TCP_PORT),
        CV_REMOTE_TLS_PORT=str(TLS_PORT),
        CV_REMOTE_SASL_USER=USER,
    )
    dn = subprocess.run(["bash", str(PKI), str(work / "pki"), addr], capture_output=True, text=True, check=True)
    env.update(CV_REMOTE_TLS_DIR=str(work / "pki" / "server"), CV_REMOTE_TLS_CLIENT_DN=dn.stdout.strip())
    password = secrets.token_urlsafe(18)
    password_env = f"CVR_REMOTE_PW_{tag.upper()}"
    os.environ[password_env] = password
    try:
        up = subprocess.run(
            ["bash", str(UP)], input=password, env=env, capture_output=True, text=True, timeout=60, check=False
        )
        if up.returncode != 0:
            raise RuntimeError(f"remote-up.sh failed: {up.stderr[-2000:]}")
        pid = int(up.stdout.strip().rsplit("=", 1)[1])
        yield RemoteHost(
            addr=addr,
            tcp_uri=f"qemu+tcp://{addr}:{TCP_PORT}/system",
            tls_uri=f"qemu+tls://{addr}:{TLS_PORT}/system",
            user=USER,
            password_env=password_env,
            pki_client=work / "pki" / "client",
            state=work / "state",
            libvirtd_pid=pid,
        )
    finally:
        subprocess.run(["bash", str(DOWN)], env=env, capture_output=True, timeout=60, check=False)
        os.environ.pop(password_env, None)


@pytest.fixture
def vm_prefix(monkeypatch) -> str:
    """The product names its VMs and volumes with this deployment prefix (ours on shared hosts)."""
    monkeypatch.setenv("CROSSVISOR_VM_PREFIX", PREFIX.rstrip("-"))
    return PREFIX


@dataclass
class RemoteSsh:
    uri: str  # qemu+libssh://root@<addr>:<port>/system
    key: Path  # the worker's private key (authorized on the remote host)
    known_hosts: Path  # the remote sshd's host key, as the worker knows it
    other_key: Path  # a key the remote host does not authorize


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)


@pytest.fixture(scope="session")
def remote_ssh(remote_host: RemoteHost) -> Iterator[RemoteSsh]:
    """An sshd of the remote host, in its network and mount namespaces (so what libvirt runs over
    ssh meets that host's own libvirtd socket), key logins only, listening on its veth address."""
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd).exists():
        raise RuntimeError("sshd missing: apt-get install openssh-server (deploy/install-system.sh)")
    rh = remote_host
    d = rh.state / "ssh"
    d.mkdir()
    _keygen(d / "host_key", "cvr-remote-host")
    _keygen(d / "worker_key", "cvr-worker")
    _keygen(d / "other_key", "cvr-stranger")
    shutil.copy(d / "worker_key.pub", d / "authorized_keys")
    host_pub = " ".join((d / "host_key.pub").read_text().split()[:2])
    (d / "known_hosts").write_text(f"[{rh.addr}]:{SSH_PORT} {host_pub}\n")
    (d / "sshd_config").write_text(
        f"ListenAddress {rh.addr}:{SSH_PORT}\n"
        f"HostKey {d / 'host_key'}\n"
        f"PidFile {d / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\n"
        "PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\nAllowUsers root\nUsePAM no\nStrictModes no\n"
    )
    made_privsep = not Path("/run/sshd").exists()  # sshd's compiled-in privilege separation dir
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    subprocess.run(
        [
            "nsenter",
            "-t",
            str(rh.libvirtd_pid),
            "-m",
            "-n",
            "--",
            sshd,
            "-f",
            str(d / "sshd_config"),
            "-E",
            str(d / "sshd.log"),
        ],
        check=True,
        timeout=30,
    )
    pid = 0
    try:
        for _ in range(100):
            if (d / "sshd.pid").is_file() and (d / "sshd.pid").read_text().strip():
                pid = int((d / "sshd.pid").read_text())
                try:
                    socket.create_connection((rh.addr, SSH_PORT), timeout=1).close()
                    break
                except OSError:
                    pass
            time.sleep(0.1)
        else:
            raise RuntimeError(f"sshd not listening on {rh.addr}:{SSH_PORT}: {(d / 'sshd.log').read_text()[-1500:]}")
        yield RemoteSsh(
            uri=f"qemu+libssh://root@{rh.addr}:{SSH_PORT}/system",
            key=d / "worker_key",
            known_hosts=d / "known_hosts",
            other_key=d / "other_key",
        )
    finally:
        if pid:
            try:
                os.kill(pid, signal.SIGTERM)  # the listener; sessions end with their connections
            except ProcessLookupError:
                pass
        if made_privsep:
            try:
                Path("/run/sshd").rmdir()
            except OSError:
                pass
