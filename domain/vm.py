"""VM descriptions exchanged with drivers; pure data so grading can compare them."""

from __future__ import annotations

from dataclasses import dataclass, field

# Where crossvisor writes its content marker on a VM's first disk: 1 MiB in, in the range every
# project image leaves unused (its first partition starts at 2 MiB).
MARKER_OFFSET = 1 << 20
# The metadata item that records which cell a VM belongs to (libvirt <metadata>, vSphere
# extraConfig): a VM found under a cell's name is adopted only when this says it is the cell's own.
# Not an observation: inspect leaves crossvisor.* items out of what is graded.
OWNER_KEY = "crossvisor.owner"


@dataclass
class DiskSpec:
    path: str  # file on the local artifact store
    format: str  # qcow2 | vmdk | vpc | vhdx | raw
    bus: str = "virtio"  # virtio | scsi | ide | sata
    capacity_bytes: int = 0


@dataclass
class NicSpec:
    model: str = "virtio"  # virtio | e1000 | vmxnet3 | rtl8139 | netvsc
    mac: str = ""
    network: str = "default"
    pci_slot: int = 0  # where the hypervisor puts it (domain.profiles); 0 = its own choice


@dataclass
class VmSpec:
    """What to create on a hypervisor."""

    name: str
    cpus: int
    memory_mib: int
    disks: list[DiskSpec]
    nics: list[NicSpec] = field(default_factory=list)
    firmware: str = "bios"  # bios | efi
    hardware_version: str = ""  # vmx-NN on vSphere
    metadata: dict[str, str] = field(default_factory=dict)  # kept across export/import
    machine: str = ""  # QEMU machine type (q35 | pc) on libvirt hosts; "" = the host's default
    # guest TCP ports to reach from the worker (the guest's service): the driver maps each to a
    # loopback port on the host, through the guest's own NIC
    forward_ports: list[int] = field(default_factory=list)
    # which cell this VM belongs to (``activities.stages.base.vm_owner``), recorded on the VM
    # (``OWNER_KEY``); "" = no ownership check (hand-made VMs, tests)
    owner: str = ""
    # present the QEMU guest agent's channel (profiles that have one, for operators' images: the
    # project's own images keep the hardware their pinned outcomes were measured on)
    guest_agent: bool = False
    # the display adapter (libvirt video model, ``HardwareProfile.video``), "" = none: operators'
    # images get the one their platform presents, so that a guest silent on its serial port
    # (Windows, a console on tty0 only) still shows its screen (``Driver.screenshot``); the
    # project's own images keep the hardware their pinned outcomes were measured on
    video: str = ""
    # EFI only: the VM's own UEFI variable store (a file on the worker: its boot entries), copied
    # for the VM at its first start; "" = the firmware's empty store, as every imported VM gets
    nvram: str = ""


@dataclass
class Hardware:
    """What a hypervisor reports about a VM: compared before/after to grade checks."""

    cpus: int
    memory_mib: int
    disks: list[DiskSpec]
    nics: list[NicSpec]
    firmware: str
    controllers: list[str] = field(default_factory=list)  # e.g. ["scsi:lsilogic", "ide"]
    hardware_version: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    power_state: str = "off"  # on | off
    # What decides interop beyond CPU/memory/disks/NICs (read from OVF packages, kept on export).
    os_id: int = 0  # CIM operating system id (OperatingSystemSection ovf:id), 0 = unknown
    os_type: str = ""  # VMware guestId (vmw:osType) when the source named one, e.g. "debian10_64Guest"
    cores_per_socket: int = 0  # 0 = not specified (vmw:CoresPerSocket)
    extra_config: dict[str, str] = field(default_factory=dict)  # vmw:ExtraConfig key -> value
    cdroms: list[str] = field(default_factory=list)  # CD/DVD drives: "bus" (empty) or "bus:<media href>"
    serials: list[str] = field(default_factory=list)  # serial ports: backing ("" = unconnected)
    configuration: str = ""  # OVF DeploymentOptionSection configuration this hardware came from


@dataclass
class ExportedVm:
    """An exported VM package on the local artifact store (OVF descriptor or OVA)."""

    package: str  # path to .ova or .ovf
    disks: list[DiskSpec]
    # guest TCP ports the imported VM should expose to the worker (see VmSpec.forward_ports)
    forward_ports: list[int] = field(default_factory=list)
    guest_agent: bool = False  # present the guest agent channel where the target's profile has one
    screen: bool = False  # present the target profile's display adapter (see VmSpec.video)
