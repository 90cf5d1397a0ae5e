"""What a self-booting guest image saw about its own boot, from its serial console alone.

The images of ``deploy/guests/build-guest-image.sh`` print ``key=value`` evidence lines on ttyS0
(their initramfs-tools hook while it waits for the root device, then a systemd service once the
system is up). :func:`parse` turns a console capture into :class:`GuestEvidence`;
:func:`boot_failure` classifies, from the console alone, the known ways a boot dies (no driver for
the boot disk's controller, kernel root-mount panic, GRUB errors, firmware with nothing to boot,
init never reached, no output). Pure: no I/O.

Line formats (one per line, values without spaces)::

    CV-INITRAMFS stage=local-top|local-block|rootwait root=<root=> [uptime_s=<n>] [waiting_for=<dev>]
    CV-PCI slot=<0000:00:03.0> class=<0x010000> id=<vvvv:dddd> driver=<driver|none> [virtio_driver=<driver|none>]
    CV-ROOTWAIT gave_up=1 root=<root=> after_s=<n>
    CROSSVISOR-BOOT-OK
    CV-FACT image=<name> build=<key> init=<pid 1> kernel=<uname -r> firmware=<efi|bios> cpus=<n> mem_kib=<n> boot_id=<uuid>
    CV-ROOT dev=<node> source=<root=> fstype=<fs> disk=<vda|sda|...> driver=<driver> mode=<rw|ro>
    CV-MOUNT point=<dir> spec=<fstab spec> ok=<1|0> error=<reason|->
    CV-DISK name=<disk> bytes=<n> driver=<driver> marker=<hex of 64 bytes at 1 MiB>
    CV-PCI ...                       (again, as the booted system sees it)
    CV-NETCFG names=<a,b|*|none> source=<file|none>
    CV-NIC name=<if> mac=<mac> driver=<driver|none> link=<up|down|unknown> ipv4=<addr/prefix|none>
    CV-APP name=http port=8080 listening=<1|0>
    CV-FACT uptime_s=<seconds>
    CROSSVISOR-BOOT-END
    CV-READY
    CV-BIRTH stage=start|done ...    (legacy-bios's first boot only)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

BOOT_OK = "CROSSVISOR-BOOT-OK"
BOOT_END = "CROSSVISOR-BOOT-END"
READY = "CV-READY"

# vendor:device -> what the guest was shown. Storage (01xx) and network (02xx) functions QEMU
# offers as other hypervisors' virtual hardware.
PCI_NAMES: dict[str, str] = {
    # virtio: legacy (transitional) and modern (virtio 1.0) device ids
    "1af4:1000": "virtio-net (legacy)",
    "1af4:1001": "virtio-blk (legacy)",
    "1af4:1004": "virtio-scsi (legacy)",
    "1af4:1041": "virtio-net",
    "1af4:1042": "virtio-blk",
    "1af4:1048": "virtio-scsi",
    # VMware
    "15ad:07c0": "VMware PVSCSI",
    "15ad:07b0": "VMware VMXNET3",
    "15ad:0720": "VMware VMXNET",
    # LSI / Broadcom
    "1000:0054": "LSI Logic SAS1068",
    "1000:0030": "LSI Logic 53C1030",
    "1000:0012": "LSI 53C895A",
    "1000:0060": "LSI MegaRAID SAS 1078",
    "1000:005b": "LSI MegaRAID SAS 2108",
    # Intel
    "8086:7010": "Intel PIIX3 IDE",
    "8086:7111": "Intel PIIX4 IDE",
    "8086:2922": "Intel ICH9 AHCI",
    "8086:100e": "Intel e1000",
    "8086:10d3": "Intel e1000e",
    "8086:1209": "Intel i82559 (eepro100)",
    # Hyper-V Gen 1 legacy network adapter, Xen/QEMU classics
    "1011:0019": "DEC 21140 (tulip)",
    "10ec:8139": "Realtek RTL8139",
    "10ec:8029": "Realtek RTL8029 (ne2k_pci)",
    "1022:2000": "AMD PCnet",
    # NVMe
    "1b36:0010": "QEMU NVMe",
    "8086:5845": "QEMU NVMe (legacy id)",
}

_TAG = re.compile(r"(CROSSVISOR-BOOT-OK|CROSSVISOR-BOOT-END|CV-READY\b|CV-[A-Z]+ )")
# A kernel message glued to the end of one of our lines starts with its timestamp.
_KMSG = re.compile(r"\[\s*\d+\.\d+\]")
_TOKEN = re.compile(r"([a-z][a-z0-9_]*)=(\S*)")


def pci_name(vendor_device: str) -> str:
    return PCI_NAMES.get(vendor_device.lower(), f"PCI {vendor_device}")


@dataclass(frozen=True)
class PciFunction:
    slot: str
    pci_class: str  # "0x010000"
    id: str  # "vvvv:dddd"
    driver: str | None  # None: the guest has no driver bound to the PCI function
    # virtio functions only: the driver of the virtio device behind the virtio-pci transport
    # (virtio_blk, virtio_scsi, virtio_net); None if that driver is missing. "" when not reported.
    virtio_driver: str | None = ""

    @property
    def name(self) -> str:
        return pci_name(self.id)

    @property
    def effective_driver(self) -> str | None:
        """What actually drives the device: for virtio, the virtio device driver, not virtio-pci."""
        if self.virtio_driver != "":
            return self.virtio_driver
        return self.driver

    @property
    def is_storage(self) -> bool:
        return self.pci_class.lower().startswith("0x01")

    @property
    def is_network(self) -> bool:
        return self.pci_class.lower().startswith("0x02")


@dataclass(frozen=True)
class RootInfo:
    dev: str
    source: str  # the kernel's root= (what GRUB's config told it)
    fstype: str
    disk: str
    driver: str | None
    mode: str


@dataclass(frozen=True)
class MountInfo:
    point: str
    spec: str
    ok: bool
    error: str | None


@dataclass(frozen=True)
class DiskInfo:
    name: str
    bytes: int
    driver: str | None
    marker: str  # hex, "" if unreadable


@dataclass(frozen=True)
class NicInfo:
    name: str
    mac: str
    driver: str | None
    link: str
    ipv4: str | None


@dataclass(frozen=True)
class NetConfig:
    names: tuple[str, ...]  # ("*",) for a name-agnostic config, () for none
    source: str | None

    @property
    def any_name(self) -> bool:
        return "*" in self.names


@dataclass(frozen=True)
class AppInfo:
    name: str
    port: int
    listening: bool


@dataclass(frozen=True)
class RootWait:
    gave_up: bool
    root: str
    after_s: int | None


@dataclass(frozen=True)
class GuestEvidence:
    booted: bool = False  # CROSSVISOR-BOOT-OK seen: the system came up far enough to report
    complete: bool = False  # ... and CROSSVISOR-BOOT-END: every fact was printed
    ready: bool = False  # CV-READY: the app is up and the guest keeps running
    facts: dict[str, str] = field(default_factory=dict)  # every CV-FACT key=value, as printed
    root: RootInfo | None = None
    mounts: tuple[MountInfo, ...] = ()
    disks: tuple[DiskInfo, ...] = ()
    pci: tuple[PciFunction, ...] = ()  # as the booted system sees them
    netcfg: NetConfig | None = None
    nics: tuple[NicInfo, ...] = ()
    app: AppInfo | None = None
    initramfs_stages: tuple[str, ...] = ()  # CV-INITRAMFS stages, in order
    initramfs_root: str | None = None
    initramfs_pci: tuple[PciFunction, ...] = ()  # last state the initramfs printed
    rootwait: RootWait | None = None
    birth: dict[str, str] = field(default_factory=dict)  # CV-BIRTH stage=done fields (legacy-bios)
    boots: int = 0  # how many CROSSVISOR-BOOT-OK blocks the console holds (the last one is kept)

    def fact(self, key: str) -> str | None:
        return self.facts.get(key)

    @property
    def image(self) -> str | None:
        return self.facts.get("image")

    @property
    def boot_id(self) -> str | None:
        return self.facts.get("boot_id")

    @property
    def firmware(self) -> str | None:
        return self.facts.get("firmware")

    @property
    def uptime_s(self) -> float | None:
        try:
            return float(self.facts["uptime_s"])
        except (KeyError, ValueError):
            return None

    @property
    def nics_with_address(self) -> tuple[NicInfo, ...]:
        return tuple(n for n in self.nics if n.ipv4)

    @property
    def undriven_storage(self) -> tuple[PciFunction, ...]:
        """Storage functions without a driver: in the initramfs if it gave up, else in the system."""
        src = self.initramfs_pci if (self.rootwait or not self.booted) else self.pci
        return tuple(p for p in src if p.is_storage and p.effective_driver is None)

    @property
    def undriven_network(self) -> tuple[PciFunction, ...]:
        return tuple(p for p in self.pci if p.is_network and p.effective_driver is None)


@dataclass(frozen=True)
class BootFailure:
    kind: str  # machine-readable, one of KINDS
    detail: str  # one line for a human
    root_spec: str | None = None
    undriven_storage: tuple[PciFunction, ...] = ()


KINDS = (
    "root-device-not-found",  # the initramfs gave up waiting for root= (no driver, wrong name)
    "kernel-panic-vfs",  # "VFS: Unable to mount root fs"
    "kernel-panic",  # any other kernel panic
    "grub-error",  # GRUB could not find/read its disk, filesystem or files
    "no-bootable-device",  # the firmware found nothing to boot (SeaBIOS / OVMF)
    "emergency-mode",  # systemd gave up on the boot (fstab mount failed, ...)
    "init-not-reached",  # the kernel ran but the system never reported
    "evidence-incomplete",  # the system reported but stopped before CROSSVISOR-BOOT-END
    "no-output",  # nothing at all on the console
)


def _clean_lines(console_text: str) -> list[str]:
    text = console_text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")
    return text.split("\n")


def _fields(rest: str) -> dict[str, str]:
    m = _KMSG.search(rest)
    if m:
        rest = rest[: m.start()]
    return {k: v for k, v in _TOKEN.findall(rest)}


def _none(v: str | None) -> str | None:
    return None if v in (None, "", "none", "-") else v


def _int(v: str | None) -> int | None:
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


def _pci(f: dict[str, str]) -> PciFunction | None:
    if "slot" not in f or "id" not in f:
        return None
    return PciFunction(
        slot=f["slot"],
        pci_class=f.get("class", ""),
        id=f["id"].lower(),
        driver=_none(f.get("driver")),
        virtio_driver=_none(f["virtio_driver"]) if "virtio_driver" in f else "",
    )


def _records(console_text: str) -> list[tuple[str, dict[str, str]]]:
    """(tag, fields) for every evidence record, wherever it sits on its line."""
    out: list[tuple[str, dict[str, str]]] = []
    for line in _clean_lines(console_text):
        matches = list(_TAG.finditer(line))
        for i, m in enumerate(matches):
            end = matches[i + 1].start() if i + 1 < len(matches) else len(line)
            tag = m.group(1).strip()
            out.append((tag, _fields(line[m.end() : end]) if tag.startswith("CV-") else {}))
    return out


def parse(console_text: str) -> GuestEvidence:
    """Every evidence record of one console capture. Tolerates CRLF, NULs and kernel messages
    sharing a line with a record; a console holding several boots yields the last one's system
    facts (initramfs records are kept from the last boot that printed them too)."""
    boots = 0
    booted = complete = ready = False
    facts: dict[str, str] = {}
    root = netcfg = app = rootwait = None
    mounts: list[MountInfo] = []
    disks: list[DiskInfo] = []
    pci: list[PciFunction] = []
    nics: list[NicInfo] = []
    stages: list[str] = []
    initramfs_root = None
    initramfs_pci: dict[str, PciFunction] = {}
    birth: dict[str, str] = {}
    in_system = False
    for tag, f in _records(console_text):
        if tag == BOOT_OK:
            boots += 1
            booted, complete, ready, in_system = True, False, False, True
            facts, mounts, disks, pci, nics = {}, [], [], [], []
            root = netcfg = app = None
        elif tag == BOOT_END:
            complete = booted
            in_system = False
        elif tag == READY:
            ready = complete
        elif tag == "CV-INITRAMFS":
            if f.get("stage") == "local-top":  # a new boot's initramfs
                stages, initramfs_pci, rootwait = [], {}, None
            stages.append(f.get("stage", "?"))
            initramfs_root = f.get("root", initramfs_root)
            in_system = False
        elif tag == "CV-PCI":
            p = _pci(f)
            if p is None:
                continue
            if in_system:
                pci.append(p)
            else:
                initramfs_pci[p.slot] = p
        elif tag == "CV-ROOTWAIT":
            rootwait = RootWait(gave_up=f.get("gave_up") == "1", root=f.get("root", ""), after_s=_int(f.get("after_s")))
        elif tag == "CV-FACT":
            facts.update(f)
        elif tag == "CV-ROOT":
            root = RootInfo(
                dev=f.get("dev", ""),
                source=f.get("source", ""),
                fstype=f.get("fstype", ""),
                disk=f.get("disk", ""),
                driver=_none(f.get("driver")),
                mode=f.get("mode", ""),
            )
        elif tag == "CV-MOUNT":
            mounts.append(
                MountInfo(
                    point=f.get("point", ""), spec=f.get("spec", ""), ok=f.get("ok") == "1", error=_none(f.get("error"))
                )
            )
        elif tag == "CV-DISK":
            disks.append(
                DiskInfo(
                    name=f.get("name", ""),
                    bytes=_int(f.get("bytes")) or 0,
                    driver=_none(f.get("driver")),
                    marker=f.get("marker", ""),
                )
            )
        elif tag == "CV-NETCFG":
            names = f.get("names", "none")
            netcfg = NetConfig(
                names=() if names in ("", "none") else tuple(names.split(",")), source=_none(f.get("source"))
            )
        elif tag == "CV-NIC":
            nics.append(
                NicInfo(
                    name=f.get("name", ""),
                    mac=f.get("mac", ""),
                    driver=_none(f.get("driver")),
                    link=f.get("link", "unknown"),
                    ipv4=_none(f.get("ipv4")),
                )
            )
        elif tag == "CV-APP":
            app = AppInfo(name=f.get("name", ""), port=_int(f.get("port")) or 0, listening=f.get("listening") == "1")
        elif tag == "CV-BIRTH":
            if f.get("stage") == "done":
                birth = f
    return GuestEvidence(
        booted=booted,
        complete=complete,
        ready=ready,
        facts=facts,
        root=root,
        mounts=tuple(mounts),
        disks=tuple(disks),
        pci=tuple(pci),
        netcfg=netcfg,
        nics=tuple(nics),
        app=app,
        initramfs_stages=tuple(stages),
        initramfs_root=initramfs_root,
        initramfs_pci=tuple(sorted(initramfs_pci.values(), key=lambda p: p.slot)),
        rootwait=rootwait,
        birth=birth,
        boots=boots,
    )


_VFS = re.compile(r"VFS: Unable to mount root fs on (\S+)")
_PANIC = re.compile(r"Kernel panic - not syncing: ([^\n\r]*)")
_GRUB_ERR = re.compile(
    r"error: (no such device|unknown filesystem|disk `[^']*' not found|file `[^']*' not found|[^\n\r]{0,80})"
)
_GAVE_UP = re.compile(r"Gave up waiting for root (?:file system )?device|ALERT!\s+\S+ does not exist")
_ALERT = re.compile(r"ALERT!\s+(\S+) does not exist")
_SEABIOS_NONE = re.compile(r"No bootable device|Boot failed: not a bootable disk")
_OVMF_NONE = re.compile(
    r"No bootable option or device was found|BdsDxe: failed to load Boot\w+ [^\n\r]*Not Found|Shell> "
)
_EMERGENCY = re.compile(r"You are in emergency mode|Entering emergency mode")
_KERNEL = re.compile(r"Linux version \d")
_BIOS_HANDOFF = re.compile(r"Booting from Hard Disk\.\.\.\s*$")
_GRUB_SEEN = re.compile(r"GRUB|Booting `|Loading Linux|error: ")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1bc")


def _storage_text(pcis: tuple[PciFunction, ...]) -> str:
    return ", ".join(f"{p.id} {p.name} at {p.slot}" for p in pcis) or "none"


# What the console shows when a boot is going nowhere: firmware or GRUB waiting for a human.
_DEAD_END = re.compile(
    r"No bootable device|Boot failed: not a bootable disk|No bootable option or device|Shell> |grub rescue> |grub> |"
    r'BdsDxe: failed to load Boot\w+ "UEFI PXE'
)
SILENT_BEFORE_KERNEL_S = 45.0  # firmware that jumped into nothing (an EFI-only disk's empty MBR) stays silent


def dead_end(console_text: str) -> bool:
    """Whether a boot in progress can no longer reach the guest's init (stop watching it)."""
    return not parse(console_text).booted and bool(_DEAD_END.search(console_text.replace("\x00", "")))


def kernel_started(console_text: str) -> bool:
    return bool(_KERNEL.search(console_text))


def boot_failure(console_text: str) -> BootFailure | None:
    """How the boot on this console died, or None if the guest came up and reported everything."""
    ev = parse(console_text)
    if ev.complete:
        return None
    text = console_text.replace("\x00", "")
    if ev.rootwait and ev.rootwait.gave_up:
        undriven = ev.undriven_storage
        return BootFailure(
            kind="root-device-not-found",
            detail=(
                f"initramfs gave up waiting for root {ev.rootwait.root} after {ev.rootwait.after_s} s; "
                f"storage without a driver: {_storage_text(undriven)}"
            ),
            root_spec=ev.rootwait.root,
            undriven_storage=undriven,
        )
    if _GAVE_UP.search(text):
        alert = _ALERT.search(text)
        spec = alert.group(1) if alert else ev.initramfs_root
        undriven = ev.undriven_storage
        return BootFailure(
            kind="root-device-not-found",
            detail=f"initramfs gave up waiting for root {spec}; storage without a driver: {_storage_text(undriven)}",
            root_spec=spec,
            undriven_storage=undriven,
        )
    m = _VFS.search(text)
    if m:
        return BootFailure(
            kind="kernel-panic-vfs",
            detail=f"kernel panic: VFS: Unable to mount root fs on {m.group(1)} (no usable initramfs or root driver)",
            root_spec=_cmdline_root(text),
        )
    # GRUB speaks before the kernel does: only that part of the console is GRUB's.
    k = _KERNEL.search(text)
    pre_kernel = _ANSI.sub("", text[: k.start()] if k else text)
    if "grub rescue>" in pre_kernel or (not k and re.search(r"^error: ", pre_kernel, re.M)):
        m = _GRUB_ERR.search(pre_kernel)
        what = m.group(1).strip() if m else "unknown error"
        rescue = " (grub rescue>)" if "grub rescue>" in pre_kernel else ""
        return BootFailure(kind="grub-error", detail=f"GRUB: error: {what}{rescue}")
    if _SEABIOS_NONE.search(text) and not _KERNEL.search(text):
        return BootFailure(
            kind="no-bootable-device",
            detail="SeaBIOS (BIOS) found nothing to boot: " + _SEABIOS_NONE.search(text).group(0),
        )
    if _OVMF_NONE.search(text) and not _KERNEL.search(text):
        return BootFailure(
            kind="no-bootable-device",
            detail="OVMF (UEFI) found nothing to boot: " + _OVMF_NONE.search(text).group(0).strip(),
        )
    if not k and not _GRUB_SEEN.search(pre_kernel) and _BIOS_HANDOFF.search(pre_kernel):
        # SeaBIOS found a boot signature and jumped into the MBR, and nothing ever followed:
        # no BIOS boot code there (the protective MBR of a GPT/EFI-only disk is all zeros).
        return BootFailure(
            kind="no-bootable-device",
            detail="SeaBIOS (BIOS) handed over to the disk's MBR and nothing followed: no BIOS boot code "
            "on the disk (e.g. an EFI-only GPT disk)",
        )
    m = _PANIC.search(text)
    if m:
        return BootFailure(kind="kernel-panic", detail=f"kernel panic: {m.group(1).strip()[:160]}")
    if _EMERGENCY.search(text):
        return BootFailure(
            kind="emergency-mode", detail="systemd entered emergency mode (a required mount or unit failed)"
        )
    if ev.booted:
        return BootFailure(
            kind="evidence-incomplete", detail="the guest started reporting but never printed CROSSVISOR-BOOT-END"
        )
    visible = _ANSI.sub("", text).strip()
    if not visible:
        return BootFailure(
            kind="no-output", detail="nothing on the serial console (firmware, GRUB and kernel all silent)"
        )
    if _KERNEL.search(text) or ev.initramfs_stages:
        last = ev.initramfs_stages[-1] if ev.initramfs_stages else "kernel"
        return BootFailure(
            kind="init-not-reached", detail=f"the kernel started but the system never reported (last stage: {last})"
        )
    return BootFailure(kind="init-not-reached", detail="console output but no kernel start seen")


def _cmdline_root(text: str) -> str | None:
    m = re.search(r"Command line: [^\n]*?\broot=(\S+)", text)
    return m.group(1) if m else None
