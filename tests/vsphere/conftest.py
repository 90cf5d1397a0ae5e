"""Session fixture: build (cached) and run govmomi's vcsim on a free loopback port.

The simulator process is started once per session and stopped by PID at the end; its datastore
directories are temp dirs that vcsim removes itself on SIGTERM.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "deploy" / "vcsim" / "build-vcsim.sh"
PASSWORD_ENV = "CROSSVISOR_TEST_VCENTER_PASSWORD"
USERNAME = "administrator@vsphere.local"


@dataclass
class Vcsim:
    url: str
    username: str
    password_ref: str
    password: str  # tests only: to assert it never leaks
    pid: int
    log: Path


@pytest.fixture(scope="session")
def vcsim_binary() -> Path:
    if shutil.which("go") is None or not Path("/usr/share/gocode/src/github.com/vmware/govmomi").is_dir():
        pytest.skip("golang-go / golang-github-vmware-govmomi-dev missing: run deploy/install-system.sh")
    out = subprocess.run(["bash", str(BUILD)], check=True, capture_output=True, text=True, timeout=600)
    return Path(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def vcsim(vcsim_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vcsim]:
    password = "pw-" + secrets.token_urlsafe(16)
    os.environ[PASSWORD_ENV] = password
    workdir = tmp_path_factory.mktemp("vcsim")
    url_file, log = workdir / "url", workdir / "vcsim.log"
    env = {**os.environ, "VCSIM_USERNAME": USERNAME, "VCSIM_PASSWORD": password}
    with open(log, "wb") as logf:
        # Port 0: the kernel picks a free port, vcsim reports it through -url-file (no race).
        proc = subprocess.Popen(
            [
                str(vcsim_binary),
                "-l",
                "127.0.0.1:0",
                "-ds",
                "2",
                "-host",
                "2",
                "-url-file",
                str(url_file),
            ],
            stdout=logf,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 30
        while not (url_file.exists() and url_file.read_text().endswith("\n")):
            if proc.poll() is not None:
                pytest.fail(f"vcsim exited with {proc.returncode}: {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("vcsim did not report its URL within 30 s")
            time.sleep(0.05)
        yield Vcsim(
            url_file.read_text().strip(),
            USERNAME,
            f"env:{PASSWORD_ENV}",
            password,
            proc.pid,
            log,
        )
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        os.environ.pop(PASSWORD_ENV, None)


@pytest.fixture(scope="session")
def driver(vcsim: Vcsim):
    from drivers.vsphere.driver import open_vsphere

    d = open_vsphere(vcsim.url, vcsim.password_ref, username=vcsim.username)
    yield d
    d.close()


@pytest.fixture
def vm_name(request: pytest.FixtureRequest, driver) -> Iterator[str]:
    """A unique VM name per test; whatever the test leaves with that prefix is destroyed."""
    name = "cvt-" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40].strip("-")
    yield name
    for n in driver.list_vms(name):
        driver.destroy(n)
