"""A guest silent on its serial port (Windows by default; a Linux with its console on tty0 only)
still shows a screen: an operator's image gets the display adapter its platform presents, and a
boot whose serial console never showed the guest's init keeps a screenshot beside the console
(libvirt's virDomainScreenshot). Real libvirtd + QEMU, the product's driver, domain XML and boot
watch (activities/stages/guest.py).

The guest here is a 512-byte boot sector that writes a line straight into VGA text memory and
halts: SeaBIOS's serial mirror relays BIOS calls, not video memory, so the line is on the screen
and nowhere on the serial console, as a desktop OS's boot is."""

from __future__ import annotations

import struct
import time
import uuid
import zlib
from pathlib import Path

import pytest

from activities.stages import guest
from activities.stages.base import StageEnv
from crossvisor.core.config import Settings
from domain.model import GuestImage, ServiceProbe
from domain.profiles import PROFILES
from domain.vm import DiskSpec, NicSpec, VmSpec
from tests.qemu.guest_boot import product_driver
from toolbox import screens

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(600)]

PREFIX = "cvg-screen-"
LINE = b"CROSSVISOR SCREEN ONLY"
# cli; ds=0; es=0xb800; di=row 12 (12 * 160); si=msg; ah=0x0f (white on black); copy chars+attr
# until NUL; hlt loop. Row 12: below anything the firmware writes (its banner takes rows 0-3).
BOOT_CODE = bytes.fromhex("FA31C08ED8B800B88EC0BF8007BE1D7CB40FAC84C07403ABEBF8F4EBFD")


def _boot_sector_disk(path: Path) -> Path:
    sector = BOOT_CODE + LINE + b"\0"
    path.write_bytes(sector.ljust(510, b"\0") + b"\x55\xaa" + bytes(1024 * 1024 - 512))
    return path


def _png_rows(png: bytes) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit RGB/RGBA PNG (all five filters) into rows of pixels."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", png[:16]
    pos, idat, width = 8, b"", 0
    while pos < len(png):
        (n,) = struct.unpack(">I", png[pos : pos + 4])
        kind, body = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + n]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and color in (2, 6), (depth, color)
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw, stride, rows, prev = zlib.decompress(idat), width * bpp, [], bytearray(width * bpp)
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, bpp, rows


def _lit(row: bytes, bpp: int) -> int:
    return sum(1 for i in range(0, len(row), bpp) if max(row[i : i + 3]) > 128)


@pytest.fixture(scope="module")
def drv(libvirt_conn, tmp_path_factory):
    yield from product_driver(tmp_path_factory.mktemp("screen"), PREFIX)


def _define(drv, tmp_path: Path, profile: str, video: str) -> str:
    prof = PROFILES[profile]
    name = PREFIX + uuid.uuid4().hex[:8]
    disk = _boot_sector_disk(tmp_path / f"{name}.raw")
    drv.provision(
        VmSpec(
            name=name,
            cpus=1,
            memory_mib=64,
            disks=[DiskSpec(str(disk), "raw", prof.disk_controller, 0)],
            nics=[NicSpec(prof.nic_model, pci_slot=prof.nic_slot)],
            machine=prof.machine,
            video=video,
        )
    )
    return name


def test_a_guest_silent_on_serial_is_graded_from_what_reached_the_console_and_its_screen_is_kept(
    drv, tmp_path: Path
) -> None:
    name = _define(drv, tmp_path, "hyperv-gen1", PROFILES["hyperv-gen1"].video)
    env = StageEnv(Settings(home=tmp_path / "home"))
    image = GuestImage("golden", source="/srv/golden.qcow2", app=ServiceProbe("tcp", 22))
    artifact = tmp_path / "home" / "target-console.log"
    artifact.parent.mkdir(parents=True, exist_ok=True)
    try:
        seen, app, _ = guest.boot_and_observe(drv, name, artifact, env, lambda _w: None, image=image)
    finally:
        drv.destroy(name)
    console = artifact.read_text()
    assert "Booting from Hard Disk" in console and LINE.decode() not in console  # serial: firmware only
    # the firmware's hand-over and then serial silence: with a screen, not taken for a disk without
    # boot code (what the same console means for a guest that writes to its serial port)
    assert not seen.reached_init and seen.failure_kind == "init-not-reached", (seen.failure, console)
    assert seen.failure.endswith("write to the screen only (as Windows does); see the screenshot"), console
    assert seen.screenshot_artifact == "target-console.png"
    width, bpp, rows = _png_rows((tmp_path / "home" / seen.screenshot_artifact).read_bytes())
    # VGA text mode: 16-pixel rows of 9-pixel cells; the boot sector's 22 characters on text row 12
    # alone, nothing between the firmware's lines and them, nothing below
    banner, gap, line, below = (
        sum(_lit(r, bpp) for r in rows[a:b]) for a, b in ((0, 48), (80, 192), (192, 208), (208, 400))
    )
    assert width == 720 and banner > 200 and gap == 0 and line > 22 * 8 and below == 0, (banner, gap, line, below)
    assert app.detail == "the guest never got ready"


@pytest.mark.parametrize("profile", ["kvm", "esxi", "hyperv-gen1", "xen-hvm"])
def test_each_platforms_display_adapter_gives_a_screenshot(drv, tmp_path: Path, profile: str) -> None:
    """vga (KVM, Hyper-V Gen 1's S3 Trio), vmvga (VMware SVGA II), cirrus (Xen HVM): the screen of
    the firmware and the boot sector, read through the product's driver."""
    video = PROFILES[profile].video
    name = _define(drv, tmp_path, profile, video)
    try:
        assert f"<model type='{video}'" in drv._need(name).XMLDesc(0)
        drv.power_on(name)
        lit = 0
        for _ in range(60):  # the firmware draws within seconds under TCG
            png = drv.screenshot(name)
            assert png is not None
            _, bpp, rows = _png_rows(png)
            lit = sum(_lit(r, bpp) for r in rows)
            if lit > 500:
                break
            time.sleep(0.5)
        assert lit > 500, f"{profile}/{video}: the screen stayed dark"
    finally:
        drv.destroy(name)
    undisplayed = _define(drv, tmp_path, profile, "")
    try:
        drv.power_on(undisplayed)
        assert drv.screenshot(undisplayed) is None  # the project's own images keep their hardware
    finally:
        drv.destroy(undisplayed)


def test_a_ppm_screen_becomes_a_png_with_the_same_pixels() -> None:
    pixels = bytes([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9])
    png = screens.ppm_to_png(b"P6\n# from qemu\n2 2\n255\n" + pixels)
    width, bpp, rows = _png_rows(png)
    assert (width, bpp, rows) == (2, 3, [pixels[:6], pixels[6:]])
    with pytest.raises(screens.NotAScreen, match="not a P6 PPM"):
        screens.ppm_to_png(b"P3\n2 2\n255\n0 0 0")
    with pytest.raises(screens.NotAScreen, match="has 3 bytes of pixels"):
        screens.ppm_to_png(b"P6\n2 2\n255\n" + pixels[:3])
