"""The console channel for ANY Linux guest: what its firmware, boot loader, kernel, initramfs and init
print on the serial console on their own, with no crossvisor part in the guest. Pure: no I/O.

Every VM with a serial console has this channel (``console=ttyS0`` on the kernel command line, the
default of cloud images and of most templates made for virtualization). It decides:

- ``boots``: the guest reached its login prompt or systemd's ``multi-user.target`` (pass), or how its
  boot died: SeaBIOS "No bootable device", OVMF failing every boot option or dropping to its shell,
  GRUB errors and its rescue prompt, systemd-boot and syslinux failures, kernel panics ("VFS: Unable to
  mount root fs"), initramfs-tools "ALERT! ... does not exist. Dropping to a shell!", dracut's
  "dracut-initqueue timeout" / "Could not boot", systemd's emergency mode.
- ``cpu_memory``, when the kernel's own log reaches the console (no ``quiet``): "smp: Brought up N
  nodes, M CPUs" and "Memory: a K/b K available", compared with the same lines on the source.
- ``nics``, when cloud-init prints its "Net device info" table (interface, address, MAC).

Kernel messages are timestamped ``[    1.234567]``; systemd status lines are ``[  OK  ] Reached
target ...``; the getty prints ``<hostname> login:``. A console holding several boots (a reboot) is
read from its last boot.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CHANNEL = "console"

_ANSI = re.compile(r"\x1b\[[0-9;?=]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1bc")
_KSTAMP = re.compile(r"^\[\s*\d+\.\d+\]\s?")

# -- milestones: (name, pattern); the first match of each is kept, in console order --------------
_MILESTONES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("firmware:seabios", re.compile(r"SeaBIOS \(version [^)]*\)")),
    ("firmware:ovmf", re.compile(r"BdsDxe: (?:loading|starting) Boot\w+|UEFI Interactive Shell")),
    # SeaBIOS's serial mirror sends a character once the next one is written: when the code it
    # hands over to writes nothing through the BIOS, the line's last dot never arrives
    ("firmware:handoff", re.compile(r"Booting from (?:Hard Disk|DVD/CD|Floppy)\.\.")),
    ("loader:grub", re.compile(r"Welcome to GRUB!|GNU GRUB\s+version|Booting `[^']*'|Loading Linux \S+ \.\.\.")),
    ("loader:systemd-boot", re.compile(r"systemd-boot \d+|Boot Loader Specification|Linux Boot Manager")),
    ("loader:syslinux", re.compile(r"(?:SYS|ISO|EXT|PXE)LINUX \d+\.\d+")),
    ("kernel", re.compile(r"Linux version (\S+)")),
    ("initramfs:initramfs-tools", re.compile(r"Loading, please wait\.\.\.|Begin: Loading essential drivers")),
    ("initramfs:dracut", re.compile(r"dracut-\d+ \(Initramfs\)|Starting dracut-\w+|dracut(?:-\w+)?\[\d+\]|dracut: ")),
    ("init:run", re.compile(r"Run (\S+) as init process")),
    ("init:systemd", re.compile(r"^Welcome to (?!GRUB)(.+)!$|systemd\[1\]: systemd \d+")),
    # the other inits an operator's template may run (Alpine, Gentoo, Devuan, older appliances)
    ("init:openrc", re.compile(r"OpenRC \S+ is starting up")),
    ("init:sysvinit", re.compile(r"INIT: version \S+ booting")),
    ("target:multi-user", re.compile(r"Reached target (?:multi-user\.target|Multi-User System)")),
    ("target:graphical", re.compile(r"Reached target (?:graphical\.target|Graphical Interface)")),
    ("cloud-init", re.compile(r"Cloud-init v\. \S+ (?:running|finished)")),
    # the getty's prompt; a kernel or cloud-init line may follow it on the same line (both write to ttyS0)
    ("login", re.compile(r"^(\S+) login: ?(?:$|\[\s*\d+\.\d+\] |[\w.@-]+\[\d+\]: )")),
)

# -- failures: (kind, pattern, detail); checked in this order, the first that matches decides -----
_GRUB_ERROR = re.compile(
    r"error: (no such device[^\n]*|unknown filesystem|disk `[^']*' not found|file `[^']*' not found|"
    r"you need to load the kernel first|no such partition|attempt to read or write outside of disk[^\n]*)"
)
_FAILURES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    (
        "root-device-not-found",
        re.compile(r"ALERT!\s+(\S+) does not exist\.\s+Dropping to a shell!"),
        "initramfs-tools gave up waiting for root {0} and dropped to its shell",
    ),
    (
        "root-device-not-found",
        re.compile(r"Gave up waiting for root (?:file system )?device"),
        "initramfs-tools gave up waiting for the root device",
    ),
    (
        "root-device-not-found",
        re.compile(r"Warning: (/dev/\S+|\S+=\S+) does not exist"),
        "dracut: root device {0} does not exist (dracut gave up waiting and entered its emergency shell)",
    ),
    (
        "root-device-not-found",
        re.compile(
            r"dracut-initqueue timeout|dracut-initqueue\[\d+\]: Warning: Could not boot|Warning: Could not boot\."
        ),
        "dracut: the root device never appeared (dracut-initqueue timeout, Could not boot)",
    ),
    (
        "kernel-panic-vfs",
        re.compile(r"VFS: Unable to mount root fs on (\S+)"),
        "kernel panic: VFS: Unable to mount root fs on {0} (no usable initramfs or root driver)",
    ),
    ("kernel-panic", re.compile(r"Kernel panic - not syncing: ([^\n]{0,160})"), "kernel panic: {0}"),
    (
        "emergency-mode",
        re.compile(r"You are in emergency mode|Entering emergency mode|Give root password for maintenance"),
        "systemd entered emergency mode (a required mount or unit failed)",
    ),
    ("grub-error", _GRUB_ERROR, "GRUB: error: {0}"),
    ("grub-error", re.compile(r"grub rescue>"), "GRUB could not load its modules or config (grub rescue>)"),
    (
        "loader-error",
        re.compile(r"Could not find kernel image: (\S+)|Failed to load ldlinux\.c32|Boot error"),
        "syslinux: {0}",
    ),
    (
        "loader-error",
        re.compile(r"Failed to (?:start|execute) ([^:\n]*(?:Boot Manager|\.efi)[^\n]*)|Error loading \\\S+: (.*)"),
        "systemd-boot: {0}",
    ),
    (
        "no-bootable-device",
        re.compile(r"No bootable device|Boot failed: not a bootable disk"),
        "SeaBIOS (BIOS) found nothing to boot",
    ),
    (
        "no-bootable-device",
        re.compile(r"No bootable option or device was found|BdsDxe: failed to load Boot\w+ \"[^\"]*\"[^\n]*Not Found"),
        "OVMF (UEFI) could not load any boot option",
    ),
    (
        "no-bootable-device",
        re.compile(r"^Shell>|UEFI Interactive Shell"),
        "OVMF (UEFI) found nothing to boot and opened its shell",
    ),
)
# Where a boot waits for a human and nothing more will come: stop watching.
_DEAD_END = re.compile(
    r"No bootable device|Boot failed: not a bootable disk|No bootable option or device|^Shell>|grub rescue>|"
    r"Kernel panic - not syncing|Dropping to a shell!|^\(initramfs\)|^dracut:/#|You are in emergency mode|"
    r"Give root password for maintenance|Press Enter for maintenance|Entering emergency mode|Could not find kernel image",
    re.M,
)
_WELCOME = re.compile(r"^Welcome to (?!GRUB)(.+)!$")
_SMP = re.compile(r"smp: Brought up \d+ nodes?, (\d+) CPUs?")
_MEM = re.compile(r"Memory: (\d+)K/(\d+)K available")
_CMDLINE_ROOT = re.compile(r"Command line: [^\n]*?\broot=(\S+)")
_FAILED_UNIT = re.compile(r"\[FAILED\] Failed to (?:start|mount) (.+?)\.?$")
_CI_ROW = re.compile(
    r"ci-info: \|\s*([^|\s]+)\s*\|\s*(True|False)\s*\|\s*([^|\s]+)\s*\|\s*([^|]*?)\s*\|\s*([^|]*?)\s*\|\s*([^|\s]*)\s*\|"
)
# the kernel naming a NIC and its driver, e.g. "virtio_net virtio0 enp1s0: renamed from eth0",
# "e1000 0000:00:03.0 eth0: (PCI:33MHz:32-bit) 52:54:00:12:34:56"
_NIC_RENAMED = re.compile(r"^(\w+) \S+ (\w+): renamed from \w+")
_LINK_UP = re.compile(r"IPv6: ADDRCONF\(NETDEV_CHANGE\): (\w+): link becomes ready|(\w+): Link is Up")


@dataclass(frozen=True)
class Milestone:
    name: str  # "kernel", "loader:grub", "login", ...
    line: str  # the console line that showed it


@dataclass(frozen=True)
class ConsoleNic:
    name: str
    ipv4: str  # "" when the console showed none
    mac: str = ""
    driver: str = ""
    link: str = "unknown"


@dataclass(frozen=True)
class ConsoleReport:
    """What any Linux guest's console showed. Empty fields: the console did not show it."""

    milestones: tuple[Milestone, ...] = ()
    kernel: str = ""  # release, from "Linux version"
    root_spec: str = ""  # root= from the kernel command line
    init: str = ""  # "systemd" or the init the kernel ran
    os_name: str = ""  # from systemd's "Welcome to ...!"
    hostname: str = ""  # from the getty's "<hostname> login:"
    cpus: int = 0
    mem_kib: int = 0  # the kernel's "Memory: a K/b K available": b
    nics: tuple[ConsoleNic, ...] = ()
    failed_units: tuple[str, ...] = ()
    failure_kind: str = ""
    failure: str = ""

    def reached(self, name: str) -> bool:
        return any(m.name == name for m in self.milestones)

    @property
    def firmware(self) -> str:
        return next((m.name.split(":")[1] for m in self.milestones if m.name.startswith("firmware:")), "")

    @property
    def loader(self) -> str:
        return next((m.name.split(":")[1] for m in self.milestones if m.name.startswith("loader:")), "")

    @property
    def up(self) -> bool:
        """The system is up: its getty asks for a login, or systemd reached its default target."""
        return self.reached("login") or self.reached("target:multi-user") or self.reached("target:graphical")

    @property
    def last_milestone(self) -> str:
        return self.milestones[-1].name if self.milestones else ""

    @property
    def silent(self) -> bool:
        return not self.milestones


def lines(console_text: str) -> list[str]:
    """The console's lines without NULs, CRs, ANSI sequences and kernel timestamps."""
    text = console_text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")
    return [_KSTAMP.sub("", _ANSI.sub("", x)).rstrip() for x in text.split("\n")]


def _last_boot(console_text: str) -> str:
    """From the start of the last boot on: a console that saw a reboot is read as its last boot."""
    kernels = [m.start() for m in re.finditer(r"Linux version \d", console_text)]
    firmware = [m.start() for m in re.finditer(r"SeaBIOS \(version", console_text)]
    if not kernels:
        return console_text[firmware[-1] :] if firmware else console_text
    after = [f for f in firmware if f > kernels[-1]]  # rebooted, the next kernel not started yet
    if after:
        return console_text[after[-1] :]
    if len(kernels) == 1:
        return console_text
    before = [f for f in firmware if kernels[-2] < f < kernels[-1]]
    return console_text[before[-1] if before else kernels[-1] :]


def read(console_text: str) -> ConsoleReport:
    """Everything the console shows of the boot (the last boot, if there were several)."""
    ls = lines(_last_boot(console_text))
    joined = "\n".join(ls)
    seen: dict[str, tuple[int, Milestone]] = {}
    kernel = init = os_name = hostname = ""
    for i, line in enumerate(ls):
        for name, pat in _MILESTONES:
            m = pat.search(line)
            if not m:
                continue
            if name == "login":
                hostname = m.group(1)
                seen.pop("login", None)  # keep the last prompt (after the boot's other lines)
            if name in seen:
                continue
            seen[name] = (i, Milestone(name, line.strip()[:200]))
            if name == "kernel":
                kernel = m.group(1)
            elif name == "init:run":
                init = m.group(1)
            elif name in ("init:systemd", "init:openrc", "init:sysvinit"):
                init = name.split(":")[1]
        if not os_name and (w := _WELCOME.search(line)):
            os_name = w.group(1).strip()
    if init.endswith("/init"):  # the initramfs's /init: the system's own init is the one it handed to
        init = next((x for x in ("systemd", "openrc", "sysvinit") if f"init:{x}" in seen), init)
    order = [m for _i, m in sorted(seen.values(), key=lambda x: x[0])]
    smp = _SMP.search(joined)
    mem = _MEM.search(joined)
    root = _CMDLINE_ROOT.search(joined)
    failed = tuple(dict.fromkeys(m.group(1) for x in ls if (m := _FAILED_UNIT.search(x))))
    nics = _nics(ls)
    report = ConsoleReport(
        milestones=tuple(order),
        kernel=kernel,
        root_spec=root.group(1) if root else "",
        init=init,
        os_name=os_name,
        hostname=hostname,
        cpus=int(smp.group(1)) if smp else 0,
        mem_kib=int(mem.group(2)) if mem else 0,
        nics=nics,
        failed_units=failed,
    )
    if report.up:
        return report
    kind, detail = _failure(joined, report)
    return ConsoleReport(**{**report.__dict__, "failure_kind": kind, "failure": detail})


def _nics(ls: list[str]) -> tuple[ConsoleNic, ...]:
    """NICs with addresses from cloud-init's table; else the NICs the kernel named, without address."""
    rows: dict[str, ConsoleNic] = {}
    for x in ls:
        m = _CI_ROW.search(x)
        if not m or m.group(1) in ("Device", "lo") or ":" in m.group(3) and "." not in m.group(3):
            continue  # header, loopback, IPv6 rows
        dev, up, addr, mask, _scope, mac = m.groups()
        if dev in rows and rows[dev].ipv4:
            continue
        ipv4 = addr if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", addr) else ""
        prefix = (
            sum(bin(int(o)).count("1") for o in mask.split(".")) if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", mask) else 0
        )
        rows[dev] = ConsoleNic(
            dev,
            f"{ipv4}/{prefix}" if ipv4 and prefix else ipv4,
            mac if mac != "." else "",
            "",
            "up" if up == "True" else "down",
        )
    if rows:
        return tuple(rows.values())
    named: dict[str, ConsoleNic] = {}
    for x in ls:
        m = _NIC_RENAMED.search(x)
        if m:
            named[m.group(2)] = ConsoleNic(m.group(2), "", "", m.group(1))
    for x in ls:
        m = _LINK_UP.search(x)
        dev = m and (m.group(1) or m.group(2))
        if dev and dev in named:
            named[dev] = ConsoleNic(dev, "", "", named[dev].driver, "up")
    return tuple(named.values())


# A boot loader that writes to the serial port says so after this line; one that writes to the
# screen only (Windows' bootmgr) leaves the same silence as a disk without boot code.
HANDOFF_SILENCE = "SeaBIOS (BIOS) handed over to the disk's MBR and nothing followed"


def _failure(joined: str, r: ConsoleReport) -> tuple[str, str]:
    for kind, pat, detail in _FAILURES:
        m = pat.search(joined) if not pat.pattern.startswith("^") else re.search(pat.pattern, joined, re.M)
        if not m:
            continue
        if kind in ("no-bootable-device", "grub-error", "loader-error") and r.reached("kernel"):
            continue  # a firmware or loader message from before the kernel that then started anyway
        groups = [g for g in m.groups() if g] if m.groups() else []
        detail = detail.format((groups[0] if groups else "").strip())
        if kind == "root-device-not-found":
            detail += _named_otherwise(r.root_spec or (groups[0] if groups else ""), joined)
        return kind, detail
    if r.silent:
        if not joined.strip():
            return "no-output", "nothing on the serial console (firmware, boot loader and kernel all silent)"
        return "init-not-reached", "console output, but no firmware, boot loader or kernel line this channel knows"
    if r.reached("kernel") and not any(m.name.startswith("init:") for m in r.milestones):
        return "init-not-reached", "the kernel started but never ran an init"
    if r.reached("firmware:handoff") and not r.loader and not r.reached("kernel"):
        return "no-bootable-device", f"{HANDOFF_SILENCE}: no BIOS boot code on the disk"
    units = f"; failed units: {', '.join(r.failed_units[:4])}" if r.failed_units else ""
    return (
        "init-not-reached",
        f"the boot never reached a login prompt, a default target or crossvisor's evidence on the console "
        f"(last: {r.last_milestone}){units}",
    )


# the kernel naming a disk it found: "sd 2:0:0:0: [sda] 4194304 512-byte logical blocks",
# "virtio_blk virtio2: [vda] 4194304 512-byte logical blocks"
_DISK_NAMED = re.compile(r"\[((?:sd|vd|hd|xvd)[a-z]+)\] \d+ \d+-byte logical blocks")
_KERNEL_DISK_NAME = re.compile(r"^/dev/((?:sd|vd|hd|xvd)[a-z]+)\d*$")


def _named_otherwise(root: str, joined: str) -> str:
    """A root named by a kernel device name the kernel gave no disk, while it named others: the
    disk is there, under another name (a VM born on SCSI, sda, moved to virtio-blk, vda)."""
    m = _KERNEL_DISK_NAME.match(root)
    disks = list(dict.fromkeys(_DISK_NAMED.findall(joined)))
    if not m or not disks or m.group(1) in disks:
        return ""
    return (
        f"; the kernel named the disk {', '.join(disks)}: the root is named {root}, "
        "a kernel device name this hardware does not give"
    )


_DEAD_END_WORDS = re.compile(
    r"bootable|Shell>|grub rescue|Kernel panic|Dropping to a shell|\(initramfs\)|dracut:/#|emergency mode|maintenance|Could not find kernel"
)


def dead_end(console_text: str) -> bool:
    """Whether this boot waits at a prompt nothing will answer (stop watching). Called on every
    chunk of a boot's console: the line-by-line read only once one of its words shows."""
    if not _DEAD_END_WORDS.search(console_text):
        return False
    return bool(_DEAD_END.search("\n".join(lines(_last_boot(console_text)))))


def up(console_text: str) -> bool:
    """The guest finished booting as far as its console can tell (login prompt or default target)."""
    return read(console_text).up


def excerpt(console_text: str, tail: int = 40) -> str:
    """The milestones, the failure line, and the console's last ``tail`` lines."""
    r = read(console_text)
    head = [f"[{CHANNEL}] {m.name}: {m.line}" for m in r.milestones]
    if r.failure:
        head.append(f"[crossvisor] {r.failure_kind}: {r.failure}")
    rest = [x for x in lines(console_text)[-tail:] if x.strip()]
    return "\n".join(head + (["...", *rest] if rest else []))[-6000:]
