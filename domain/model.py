"""Plain dataclasses shared by the campaign spec, the workflows and the activities.

They cross Temporal boundaries (workflow inputs/outputs, activity arguments) so they hold only
JSON-friendly types and never a secret: credentials travel as *references* (``env:NAME``,
``file:/path``) resolved inside an activity.
"""

from dataclasses import asdict, dataclass, field
from enum import Enum

from domain import stages as stage_table

HYPERVISOR_KINDS = ("kvm", "vsphere", "hyperv", "xen")
DRIVERS = ("libvirt", "vsphere")

# Stage order of one cell (the table with timeouts, costs and sides is ``domain.stages``).
STAGES = stage_table.NAMES
ALWAYS_STAGES = stage_table.ALWAYS

# What a cell can check, each graded from what the target and the guest on it reported:
# boots      the guest's own boot path (firmware, bootloader, initramfs, root fs) reached its init
# disks      root mounted, the disk content marker intact, as the guest sees its disks
# cpu_memory vCPUs and memory as the guest sees them, against the source
# nics       a driver bound, link up, an address acquired; MAC kept or the change recorded
# app        a service in the guest answers a request that came in through the guest's network
# metadata   what the source carried (annotations, properties) as the target reports it
# lifecycle  power off, snapshot, power on, power off on the target
CHECKS = ("boots", "disks", "cpu_memory", "nics", "app", "metadata", "lifecycle")


class Grade(str, Enum):
    """ODCA's three tiers plus two that give no verdict on interop.

    pass    ODCA "success": works on the target unmodified
    warn    ODCA "warning": works only after a remediation crossvisor applied (named in the result)
    fail    ODCA "failure": does not work even after every remediation the campaign allows
    error   infrastructure kept failing after the retry policy: no verdict on interop
    skipped could not be reached (the source cannot run the image, operator skip, cancel)
    unobservable  the guest booted, but none of its channels can see what this check needs (a plain
            image with no agent, no SSH and no service declared has no view of its disks): no verdict,
            never counted as a pass. A check's grade only: a cell's grade is over its other checks.
    """

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"  # a real interop failure, with evidence
    ERROR = "error"  # infrastructure kept failing after retries: not a verdict on interop
    SKIPPED = "skipped"
    UNOBSERVABLE = "unobservable"


@dataclass
class Host:
    """One physical hypervisor host from the inventory (NetBox device or file entry)."""

    name: str
    kind: str  # one of HYPERVISOR_KINDS
    driver: str  # one of DRIVERS
    endpoint: str  # libvirt URI or vCenter URL
    site: str = ""
    version: str = ""
    tags: list[str] = field(default_factory=list)
    cpus: int = 0
    memory_mib: int = 0
    slots: int = 1  # cells this host may serve at once
    credentials_ref: str = ""  # "env:NAME" / "file:/path" / "" — never the secret itself
    status: str = "active"
    custom: dict[str, str] = field(default_factory=dict)
    inventory_id: str = ""  # NetBox device id or file key, for write-back
    # the task queue of the workers of this host's site, set by the campaign's inventory snapshot
    # when the site has workers of its own (CROSSVISOR_SITE_QUEUES); "" = the campaign's queue
    task_queue: str = ""


@dataclass
class Platform:
    """A campaign platform: which hosts (by selection) and how to drive them."""

    name: str
    kind: str
    driver: str
    select: dict[str, str] = field(default_factory=dict)  # site/tag/version/cf_*
    disk_format: str = "qcow2"  # native disk format on this platform
    hardware_version: str = ""  # e.g. vmx-13 for vSphere
    nic_models: list[str] = field(default_factory=lambda: ["virtio", "e1000", "vmxnet3"])
    firmware: list[str] = field(default_factory=lambda: ["bios", "efi"])
    # the virtual hardware this hypervisor presents (domain.profiles); "" = the kind's default.
    # On libvirt/QEMU hosts the profile IS the hardware; elsewhere only a prediction input.
    profile: str = ""


@dataclass
class ServiceProbe:
    """A service the operator declares on their own image (``app: {tcp: 22}`` or ``app: {http: {port,
    path, expect}}``): crossvisor asks it through the guest's own network on the source and the target."""

    kind: str  # "tcp" | "http"
    port: int
    path: str = "/"  # http only
    expect: int = 200  # http only: the status the service answers

    def describe(self) -> str:
        return f"tcp:{self.port}" if self.kind == "tcp" else f"http:{self.port}{self.path} -> {self.expect}"


@dataclass
class SshAccess:
    """SSH into the operator's image with a key given by reference (never the key itself)."""

    credentials_ref: str  # file:/path of a private key (or env:NAME)
    user: str = "root"
    port: int = 22


@dataclass
class GuestImage:
    name: str
    cpus: int = 1
    memory_mib: int = 256
    disk_mib: int = 64
    firmware: str = "bios"
    nic_model: str = "virtio"
    disk_bus: str = "virtio"
    os: str = "linux"
    source: str = ""  # path of a disk image or package; "" with no builtin = a blank disk with a marker
    builtin: str = ""  # a guest image the project builds (toolbox.guest_images.IMAGES), e.g. legacy-bios
    app: ServiceProbe | None = None  # a service the operator declares on the image
    ssh: SshAccess | None = None  # how crossvisor may log in (read-only commands)
    # an existing VM or template on the source host, cloned for each cell and never changed; its
    # cpus/memory_mib are the template's where they are 0 (not given in the spec)
    template: str = ""


# fields added after plans were fingerprinted: left out while unset, so earlier keys stay the same
_LATE_IMAGE_FIELDS = ("app", "ssh", "template")


def image_identity(img: GuestImage) -> dict:
    """The image as cache keys and fingerprints hash it."""
    doc = asdict(img)
    for k in _LATE_IMAGE_FIELDS:
        if doc.get(k) in (None, ""):
            doc.pop(k, None)
    return doc


@dataclass
class RetryPolicySpec:
    max_attempts: int = 5
    initial_interval_s: float = 1.0
    backoff: float = 2.0
    max_interval_s: float = 60.0


@dataclass
class Concurrency:
    max_cells: int = 4
    per_kind: dict[str, int] = field(default_factory=dict)


@dataclass
class Cell:
    """One source x target x image run; it grades every check of the campaign."""

    id: str
    source: str  # platform name
    target: str
    image: str
    checks: list[str]
    fingerprint: str  # content hash of everything that determines the result


@dataclass
class CheckResult:
    check: str
    grade: Grade
    reason: str = ""  # one line: the observed cause when not passing
    # short key/value facts; the key "console" holds a console excerpt (multi-line, a few KB at most)
    evidence: dict[str, str] = field(default_factory=dict)


@dataclass
class StageRecord:
    stage: str
    status: str  # ok | fail | error | skipped | reused
    duration_s: float = 0.0
    attempts: int = 1
    reason: str = ""
    started_at: str = ""  # ISO 8601 (workflow time), for timelines
    round: int = 0  # 0: the unmodified move; N: after N rungs of the remediation ladder
    remedy: str = ""  # the remediate stage: which rung
    # sub-step -> {seconds (exclusive), cpu_s, count, bytes}: where the stage's time went
    timing: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class Prediction:
    """What the declared traits and rules expected for one check, recorded beside the observed
    grade and compared with it, never used instead of it."""

    check: str
    grade: Grade
    reason: str = ""
    rule: str = ""  # which rule or declared trait made the prediction


@dataclass
class RemediationRecord:
    """One rung of the remediation ladder, tried after an unmodified move failed."""

    name: str  # e.g. virt-v2v, generic-initramfs, nic-config
    status: str  # cured | not-cured | failed | skipped
    cured: str = ""  # the failure it cured (a check's observed reason), when it did
    changed: str = ""  # what it changed, in one line
    evidence: dict[str, str] = field(default_factory=dict)  # its own report, e.g. virt-v2v's output


@dataclass
class CellResult:
    cell_id: str
    source: str
    target: str
    image: str
    checks: list[CheckResult]
    stages: list[StageRecord]
    source_host: str = ""
    target_host: str = ""
    fingerprint: str = ""
    cached: bool = False  # result reused from an earlier identical run
    predictions: list[Prediction] = field(default_factory=list)
    remediations: list[RemediationRecord] = field(default_factory=list)
    remedy: str = ""  # the remediation that made a WARN cell work
    started_at: str = ""  # ISO 8601
    finished_at: str = ""
    # name -> path relative to CROSSVISOR_HOME (console logs, packages): what a report links to
    artifacts: dict[str, str] = field(default_factory=dict)

    @property
    def grade(self) -> Grade:
        return overall_grade([c.grade for c in self.checks])

    @property
    def mismatches(self) -> list[str]:
        """Checks whose prediction disagrees with the observed grade (a wrong rule or trait)."""
        observed = {c.check: unmodified(c) for c in self.checks}
        return [p.check for p in self.predictions if p.check in observed and not agrees(p.grade, observed[p.check])]


def unmodified(check: CheckResult) -> Grade:
    """The grade of the move as it was made, before any remedy: what a prediction is about. A
    check that failed unmodified and works after a rung (warn, ``failed_unmodified``) was a fail
    for the traits that predicted it would work."""
    if check.grade == Grade.WARN and "failed_unmodified" in check.evidence:
        return Grade.FAIL
    return check.grade


def agrees(predicted: Grade, observed: Grade) -> bool:
    """A prediction holds when it called the outcome: works (pass/warn) vs does not (fail).
    Error and skipped observations say nothing about interop, so they contradict nothing."""
    if observed in NO_VERDICT or predicted in NO_VERDICT:
        return True
    return (predicted == Grade.FAIL) == (observed == Grade.FAIL)


GRADE_ORDER = (Grade.ERROR, Grade.FAIL, Grade.WARN, Grade.PASS, Grade.SKIPPED)
# The grades a cell can have (a cell's compact code, its counts); UNOBSERVABLE is a check's only.
CELL_GRADES = GRADE_ORDER
NO_VERDICT = (Grade.ERROR, Grade.SKIPPED, Grade.UNOBSERVABLE)


def overall_grade(grades: list[Grade]) -> Grade:
    """Worst grade wins: error > fail > warn > pass; all skipped -> skipped. Unobservable checks
    give no verdict: a cell is graded on the checks its guest's channels could see (all unobservable
    or skipped -> skipped: nothing was seen, so nothing passed)."""
    for g in (Grade.ERROR, Grade.FAIL, Grade.WARN):
        if any(x == g for x in grades):
            return g
    if grades and all(g in (Grade.SKIPPED, Grade.UNOBSERVABLE) for g in grades):
        return Grade.SKIPPED
    return Grade.PASS


REASON_KEPT = 160  # characters of a failing reason a campaign carries; the full text is in the store


@dataclass
class CellOutcome:
    """What a running campaign remembers of a finished cell: enough for counts, retries and the
    matrix. Stages and evidence live only in the result store: carried across continue-as-new,
    full results made the state grow ~4 KB per cell (7.9 MB at 2,000 cells)."""

    grade: Grade
    cached: bool = False
    reason: str = ""  # the first non-passing check's reason, truncated

    @staticmethod
    def of(result: "CellResult") -> "CellOutcome":
        return CellOutcome.of_checks([(c.check, c.grade, c.reason) for c in result.checks], result.cached)

    @staticmethod
    def of_json(doc: dict) -> "CellOutcome":
        """From a CellResult as plain JSON: the campaign reads child results this way because
        typed decoding costs ~8 ms per result inside the workflow sandbox."""
        checks = [(c["check"], Grade(c["grade"]), c.get("reason", "")) for c in doc["checks"]]
        return CellOutcome.of_checks(checks, bool(doc.get("cached")))

    @staticmethod
    def of_checks(checks: list[tuple[str, Grade, str]], cached: bool) -> "CellOutcome":
        bad = [
            (name, reason)
            for name, grade, reason in checks
            if grade not in (Grade.PASS, Grade.SKIPPED, Grade.UNOBSERVABLE)
        ]
        bad = bad or [(name, reason) for name, grade, reason in checks if grade != Grade.PASS]
        reason = f"{bad[0][0]}: {bad[0][1]}" if bad else ""
        return CellOutcome(overall_grade([g for _, g, _ in checks]), cached, reason[:REASON_KEPT])


@dataclass
class CellSummary:
    """One row of a campaign's matrix as the workflow returns it."""

    cell_id: str
    source: str
    target: str
    image: str
    grade: Grade
    cached: bool = False
    reason: str = ""


@dataclass
class MatrixShape:
    """A campaign's cells in their stable order without listing them (bounded by the spec, not
    by the number of cells): every pair x every image (``matrix.expand`` order), then the cells an
    operator added. ``domain.cellbook.shape_ids`` lists the ids."""

    pairs: list[list[str]] = field(default_factory=list)  # [source, target] platform names
    images: list[str] = field(default_factory=list)
    extra: list[list[str]] = field(default_factory=list)  # [source, target, image], in order added


@dataclass
class CampaignResult:
    """Everything a report needs: the matrix, and the inventory the campaign actually used.

    A campaign's result never lists its cells, so its size does not grow with them: ``shape``
    orders the cells and ``book`` (``domain.cellbook.CellBook``, compressed) holds one grade code
    and a short reason per cell. ``crossvisor.core.result_store.summary_rows`` turns them into
    rows and ``attach`` fills ``cells`` with the full results (stages, evidence) from the store.
    ``summary`` (one row per cell) is what results of replay sets v2-v4 carried; still read."""

    campaign_id: str
    name: str
    cells: list[CellResult] = field(default_factory=list)
    hosts: list[Host] = field(default_factory=list)  # inventory snapshot (reproducibility)
    status: str = "completed"  # running | paused | completed | cancelled
    started_at: str = ""  # ISO 8601
    finished_at: str = ""
    summary: list[CellSummary] = field(default_factory=list)  # legacy (v2-v4 results)
    shape: MatrixShape | None = None
    book: str = ""  # CellBook.encode(), in ``shape`` order
