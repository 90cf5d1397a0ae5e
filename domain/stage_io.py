"""What stages hand each other: one typed output per stage, gathered in a typed cell context.

Every stage activity takes a ``StageCall`` (the cell, and the context of everything earlier stages
produced) and returns its own output type. The cell workflow folds each output into the context
under the stage's name. Plain dataclasses of JSON-friendly types, no secrets.
"""

from dataclasses import dataclass, field

from domain.messages import CellInput
from domain.model import CheckResult
from domain.vm import Hardware


@dataclass
class StageResult:
    """Fields every stage output has; each stage adds its own (all with defaults)."""

    status: str = "ok"  # ok | reused | fail (an interop failure: a result, not an error)
    reason: str = ""
    evidence: dict[str, str] = field(default_factory=dict)
    checks: list[CheckResult] = field(default_factory=list)  # grades this stage decided
    # where the stage's time went: sub-step -> {seconds (exclusive), cpu_s, count, bytes, ...}
    # (crossvisor.core.steps); bookkeeping, never a grade
    timing: dict[str, dict[str, float]] = field(default_factory=dict)


# -- what a guest reported ------------------------------------------------------------------------


@dataclass
class GuestDisk:
    name: str
    bytes: int = 0
    driver: str = ""
    marker: str = ""  # hex of the bytes at crossvisor's marker offset, as the guest read them


@dataclass
class GuestNic:
    name: str
    mac: str = ""
    driver: str = ""  # "none": the guest sees the device but has no driver for it
    link: str = ""  # up | down | unknown
    ipv4: str = ""  # addr/prefix, "" when none


@dataclass
class GuestPci:
    slot: str
    cls: str  # PCI class, e.g. 0x010000 (storage), 0x020000 (network)
    id: str  # vendor:device
    driver: str = ""  # "none" when no driver bound


@dataclass
class GuestObservation:
    """What the guest printed on its console while booting on a host (parsed), and how it ended.

    ``observed`` is False on hosts that run no guest crossvisor can see (the libvirt test driver,
    the vCenter simulator): then nothing here is a verdict and guest-side checks are skipped."""

    observed: bool = True
    note: str = ""  # why nothing was observed
    reached_init: bool = False  # the guest's own init printed its first line
    complete: bool = False  # ...and its last
    kernel: str = ""
    init: str = ""
    image: str = ""
    firmware: str = ""  # efi | bios, as the guest sees it (/sys/firmware/efi)
    cpus: int = 0
    mem_kib: int = 0
    boot_id: str = ""
    root_dev: str = ""
    root_source: str = ""  # root= from the guest's own kernel command line
    root_driver: str = ""
    root_mode: str = ""
    mounts_failed: list[str] = field(default_factory=list)  # fstab entries the guest could not mount
    disks: list[GuestDisk] = field(default_factory=list)
    pci: list[GuestPci] = field(default_factory=list)
    nics: list[GuestNic] = field(default_factory=list)
    netcfg_names: list[str] = field(default_factory=list)  # interfaces its network config names ("*": any)
    app_listening: bool = False
    failure_kind: str = ""  # how the boot died, when it did (root-not-found, no-bootable-device, ...)
    failure: str = ""  # ...in one line, from the console
    console_excerpt: str = ""  # the evidence lines and the console's tail
    console_artifact: str = ""  # the whole console, relative to CROSSVISOR_HOME
    # a PNG of the VM's screen (relative to CROSSVISOR_HOME) when its serial console did not show
    # the guest's init: what a guest silent on serial (Windows, a console on tty0) showed instead
    screenshot_artifact: str = ""
    # ssh: the manifest of the guest's files (domain.file_manifest), relative to CROSSVISOR_HOME
    manifest_artifact: str = ""
    manifest_files: int = 0
    manifest_note: str = ""  # why no manifest was taken, when SSH answered
    seconds: float = 0.0  # power-on to the guest's last line (or to giving up)
    # The guest's channels that answered on this host, e.g. ["cv-evidence"] for crossvisor's own
    # images, ["console"] for any Linux on serial. Empty in observations recorded before channels.
    channels: list[str] = field(default_factory=list)
    hostname: str = ""  # as the guest named itself (its login prompt), when a channel showed it
    milestones: list[str] = field(default_factory=list)  # console channel: boot milestones, in order
    ssh_host_key: str = ""  # "ssh-ed25519 AAAA...": the key the guest's sshd answered with
    ssh_note: str = ""  # why the SSH channel gave nothing, when it was declared
    agent_note: str = ""  # why the guest agent channel gave nothing, when the VM presents one
    system_state: str = ""  # ssh: systemctl is-system-running
    tools: str = ""  # VMware Tools' guest info through vCenter, one line ("(simulated)" on the simulator)
    tools_note: str = ""  # why VMware Tools gave nothing (e.g. "guestToolsNotRunning"), when asked
    tools_simulated: bool = False  # the tools' answer came from the vCenter simulator (set by a test)
    # VMware Tools: the guest's filesystems (mount point or drive, capacity in bytes), not block devices
    filesystems: list[GuestDisk] = field(default_factory=list)


@dataclass
class AppProbe:
    """crossvisor's request to the guest's service, through the guest's own network."""

    attempted: bool = False
    ok: bool = False
    detail: str = ""  # what happened, in one line
    body: str = ""  # what the service answered
    channel: str = ""  # "service-probe": the operator's declared service; "" (older) or "cv-app": crossvisor's


@dataclass
class ConvertedDisk:
    path: str
    format: str
    controller: str  # as the package described it ("scsi:lsilogic", "ide", ...)
    capacity_bytes: int = 0


# -- one output per stage -------------------------------------------------------------------------


@dataclass
class ReserveOutput(StageResult):
    leases: list[str] = field(default_factory=list)


@dataclass
class ProvisionOutput(StageResult):
    source_vm: str = ""  # "" when the whole source side is reused from the artifact cache
    hardware: Hardware | None = None  # as the source API reports the new VM
    marker: str = ""  # hex of the content marker written into the source disk
    birth: str = ""  # how the image was born on the source hardware (its own first boot), if it was


@dataclass
class BaselineOutput(StageResult):
    hardware: Hardware | None = None  # as the source API reports it
    guest: GuestObservation = field(default_factory=GuestObservation)
    app: AppProbe = field(default_factory=AppProbe)


@dataclass
class ExportOutput(StageResult):
    package: str = ""
    package_sha256: str = ""


@dataclass
class ConvertOutput(StageResult):
    disks: list[ConvertedDisk] = field(default_factory=list)
    descriptor: str = ""  # path of the package's OVF descriptor


@dataclass
class ImportOutput(StageResult):
    target_vm: str = ""
    hardware: Hardware | None = None  # as the target API reports the imported VM


@dataclass
class BootOutput(StageResult):
    guest: GuestObservation = field(default_factory=GuestObservation)
    app: AppProbe = field(default_factory=AppProbe)
    power_state: str = ""  # as the target API reports it after the boot


@dataclass
class VerifyOutput(StageResult):
    hardware: Hardware | None = None  # the target's report at verification time


@dataclass
class LifecycleOutput(StageResult):
    steps: list[str] = field(default_factory=list)


@dataclass
class RemediateOutput(StageResult):
    rung: str = ""
    applicable: bool = True  # False: the rung does not apply to this target (reason says why)
    disks: list[ConvertedDisk] = field(default_factory=list)  # the remediated disks, for the next import
    changed: str = ""  # what the rung changed, in one line
    report: str = ""  # the tool's own output (excerpt)


@dataclass
class CellContext:
    """Everything earlier stages produced, one field per stage (None until it ran)."""

    reserve: ReserveOutput | None = None
    provision: ProvisionOutput | None = None
    baseline: BaselineOutput | None = None
    export: ExportOutput | None = None
    convert: ConvertOutput | None = None
    import_: ImportOutput | None = None  # "import" is a Python keyword
    boot: BootOutput | None = None
    verify: VerifyOutput | None = None
    lifecycle: LifecycleOutput | None = None
    remediate: RemediateOutput | None = None  # the last rung applied (rungs are cumulative)


def context_field(stage: str) -> str:
    return "import_" if stage == "import" else stage


@dataclass
class StageCall:
    """The one input every stage activity takes."""

    cell: CellInput
    context: CellContext = field(default_factory=CellContext)
    round: int = 0  # 0: the unmodified move; N: after the first N rungs of the remediation ladder
    rung: str = ""  # the remediate stage: which rung to apply
    # a stage that touches both hosts, split between two sites' workers: which host this call
    # serves ("source" | "target"); "" = both (the hosts share a task queue)
    side: str = ""
