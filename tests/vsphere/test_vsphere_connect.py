"""Connection, authentication and inventory against the simulator; credentials never leak."""

from __future__ import annotations

import logging
import os

import pytest

from crossvisor.core.credentials import CredentialError, Secret, resolve_secret
from drivers.vsphere.driver import VcsimDriver, open_vsphere
from tests.vsphere import ops

pytestmark = pytest.mark.vsphere


def test_wrong_password_is_a_clear_error_without_the_password(vcsim, monkeypatch):
    wrong = "wrong-" + vcsim.password[::-1]
    monkeypatch.setenv("CV_WRONG_PW", wrong)
    with pytest.raises(CredentialError) as ei:
        open_vsphere(vcsim.url, "env:CV_WRONG_PW", username=vcsim.username)
    text = str(ei.value)
    assert "rejected the login" in text and vcsim.username in text and "env:CV_WRONG_PW" in text
    assert wrong not in text and wrong not in repr(ei.value)
    assert ei.value.__cause__ is None and ei.value.__suppress_context__


def test_wrong_username_rejected(vcsim):
    with pytest.raises(CredentialError):
        open_vsphere(vcsim.url, vcsim.password_ref, username="nobody")


def test_password_in_url_refused(vcsim):
    with pytest.raises(CredentialError) as ei:
        open_vsphere(vcsim.url.replace("://", f"://u:{vcsim.password}@"), vcsim.password_ref)
    assert vcsim.password not in str(ei.value)


def test_unreachable_endpoint_is_infra_fault():
    from drivers.base import InfraFault

    os.environ["CV_SOME_PW"] = "x"
    with pytest.raises(InfraFault, match="cannot connect"):
        open_vsphere("http://127.0.0.1:1/sdk", "env:CV_SOME_PW")


def test_inventory(driver):
    assert isinstance(driver, VcsimDriver) and not driver.runs_guests  # the simulator, told apart by its API
    assert ops.datacenters(driver) == ["DC0"]
    assert ops.clusters(driver) == ["DC0_C0"]
    assert {"DC0_C0_H0", "DC0_C0_H1", "DC0_H0"} <= set(ops.hosts(driver))
    assert ops.datastores(driver) == ["LocalDS_0", "LocalDS_1"]
    assert "vmx-13" in driver.supported_hardware_versions()
    assert driver.cluster.name == "DC0_C0"


def test_resolve_secret(tmp_path, monkeypatch):
    f = tmp_path / "pw"
    f.write_text("s3cr3t\n")
    s = resolve_secret(f"file:{f}")
    assert s.reveal() == "s3cr3t" and "s3cr3t" not in repr(s) and "s3cr3t" not in str(s)
    monkeypatch.setenv("CV_X", "abc")
    assert resolve_secret("env:CV_X").reveal() == "abc"
    for bad in (
        "",
        "abc",
        "env:",
        "env:CV_NOT_SET_ANYWHERE",
        f"file:{tmp_path}/missing",
        "vault:x",
    ):
        with pytest.raises(CredentialError):
            resolve_secret(bad)
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(Secret("x"))


def test_password_never_logged(vcsim, caplog, capfd, tmp_path):
    """Every logger at DEBUG, connect good and bad, run calls, fail calls: no password anywhere."""
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    d = open_vsphere(vcsim.url, vcsim.password_ref, username=vcsim.username)
    try:
        seen += [repr(vars(d)), repr(vars(d._http)), str(ops.datacenters(d))]
        d.list_vms("")
        try:
            d.inspect("no-such-vm")
        except Exception as e:  # noqa: BLE001
            seen.append(repr(e))
    finally:
        d.close()
    os.environ["CV_BAD_PW2"] = vcsim.password + "x"
    try:
        open_vsphere(vcsim.url, "env:CV_BAD_PW2", username=vcsim.username)
    except CredentialError as e:
        seen.append(repr(e))
    out, err = capfd.readouterr()
    seen += [caplog.text, out, err, vcsim.log.read_text(errors="replace")]
    for text in seen:
        assert vcsim.password not in text


def test_https_with_tls(vcsim_binary, vcsim, tmp_path):
    """vcsim -tls (self-signed): verify_tls=True refuses it, verify_tls=False connects."""
    import signal
    import subprocess
    import time

    from drivers.base import InfraFault

    url_file = tmp_path / "url"
    env = {**os.environ, "VCSIM_USERNAME": vcsim.username, "VCSIM_PASSWORD": vcsim.password}
    proc = subprocess.Popen(
        [str(vcsim_binary), "-l", "127.0.0.1:0", "-tls", "-url-file", str(url_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        deadline = time.monotonic() + 20
        while not (url_file.exists() and url_file.read_text().endswith("\n")):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        url = url_file.read_text().strip()
        assert url.startswith("https://")
        with pytest.raises(InfraFault, match="cannot connect"):
            open_vsphere(url, vcsim.password_ref, username=vcsim.username)
        d = open_vsphere(url, vcsim.password_ref, username=vcsim.username, verify_tls=False)
        try:
            assert ops.datacenters(d) == ["DC0"]
        finally:
            d.close()
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
