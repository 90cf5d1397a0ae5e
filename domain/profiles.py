"""Virtual-hardware profiles: what each hypervisor presents to a guest.

On the embedded default every platform runs on the same libvirtd + QEMU (TCG), and a profile makes
QEMU present the virtual hardware of the hypervisor it stands in for: the machine type, the boot
disk's controller, the NIC model and the firmware. The guest cannot tell the difference, which is
the point: what breaks a move is the guest meeting hardware it has no driver or configuration for.
These are stand-ins, named as such in the spec, the README and the report; against real hosts
(another inventory) the same platform is the real hypervisor and the profile only says what it
presents (used for predictions, never for grades).
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class HardwareProfile:
    name: str
    stands_in_for: str  # the hypervisor whose virtual hardware this is
    machine: str  # QEMU machine type: q35 | pc (i440FX, what ESXi, Hyper-V Gen 1 and Xen HVM emulate)
    disk_bus: str  # virtio | scsi | ide | sata
    scsi_model: str = ""  # libvirt SCSI controller model when disk_bus is scsi
    nic_model: str = "virtio"  # libvirt NIC model
    firmware: tuple[str, ...] = ("bios",)  # what the platform can boot, preferred first
    # the PCI ids (vendor:device) this hardware shows the guest: disk controller, NIC
    disk_pci: str = ""
    nic_pci: str = ""
    # PCI slot of the NIC on bus 0 (i440FX): each hypervisor places its NIC elsewhere, so the
    # guest's predictable interface name (ens<slot>) changes across a move as it does between
    # real hypervisors. 0: libvirt's choice (q35: behind a root port, enp1s0). The slots are a
    # model chosen for the stand-ins, not something a real hypervisor documents.
    nic_slot: int = 0
    # Whether the stand-in's EFI firmware can boot from this disk controller. Debian's OVMF has no
    # PVSCSI or LSI SAS boot driver (VMware's own EFI firmware has both): an EFI boot there would
    # show the stand-in's limit, not the move's, so it is not observed.
    efi_boots: bool = True
    # The QEMU guest agent's virtio-serial channel (org.qemu.guest_agent.0), as real KVM, Proxmox and
    # OpenStack present it; ESXi, Hyper-V and Xen HVM do not (VMware Tools and Hyper-V KVP are theirs).
    guest_agent_channel: bool = False
    # The display adapter (libvirt video model) the platform shows its VMs: VMware's SVGA II, Xen
    # HVM's Cirrus, standard VGA for Hyper-V Gen 1 (its S3 Trio is a VGA) and for KVM.
    video: str = "vga"

    @property
    def disk_controller(self) -> str:
        """crossvisor's controller name, as in a DiskSpec bus ("scsi:pvscsi", "ide", "virtio")."""
        if self.disk_bus == "scsi":
            return f"scsi:{SCSI_NAMES.get(self.scsi_model, self.scsi_model)}"
        return self.disk_bus


# libvirt SCSI controller models -> the names OVF/vSphere use for them
SCSI_NAMES = {"vmpvscsi": "pvscsi", "lsisas1068": "lsilogic-sas", "lsilogic": "lsilogic", "virtio-scsi": "virtio-scsi"}

PROFILES: dict[str, HardwareProfile] = {
    p.name: p
    for p in (
        HardwareProfile(
            "kvm",
            "KVM/libvirt (q35, virtio-blk, virtio-net)",
            machine="q35",
            disk_bus="virtio",
            nic_model="virtio",
            firmware=("bios", "efi"),
            disk_pci="1af4:1042",
            nic_pci="1af4:1041",
            guest_agent_channel=True,
        ),
        HardwareProfile(
            "kvm-virtio-scsi",
            "KVM/libvirt (q35, virtio-scsi, virtio-net)",
            machine="q35",
            disk_bus="scsi",
            scsi_model="virtio-scsi",
            nic_model="virtio",
            firmware=("bios", "efi"),
            disk_pci="1af4:1048",
            nic_pci="1af4:1041",
            guest_agent_channel=True,
        ),
        HardwareProfile(
            "esxi",
            "VMware ESXi (PVSCSI, VMXNET3)",
            machine="pc",
            disk_bus="scsi",
            scsi_model="vmpvscsi",
            nic_model="vmxnet3",
            firmware=("bios", "efi"),
            disk_pci="15ad:07c0",
            nic_pci="15ad:07b0",
            nic_slot=0x0B,
            efi_boots=False,
            video="vmvga",
        ),
        HardwareProfile(
            "esxi-lsisas",
            "VMware ESXi (LSI Logic SAS, E1000E)",
            machine="pc",
            disk_bus="scsi",
            scsi_model="lsisas1068",
            nic_model="e1000e",
            firmware=("bios", "efi"),
            disk_pci="1000:0054",
            nic_pci="8086:10d3",
            nic_slot=0x0B,
            efi_boots=False,
            video="vmvga",
        ),
        HardwareProfile(
            "hyperv-gen1",
            "Microsoft Hyper-V Generation 1 (IDE, legacy network adapter = DEC 21140)",
            machine="pc",
            disk_bus="ide",
            nic_model="tulip",
            firmware=("bios",),
            disk_pci="8086:7010",
            nic_pci="1011:0019",
            nic_slot=0x0A,
        ),
        HardwareProfile(
            "xen-hvm",
            "Xen HVM (emulated IDE, RTL8139)",
            machine="pc",
            disk_bus="ide",
            nic_model="rtl8139",
            firmware=("bios",),
            disk_pci="8086:7010",
            nic_pci="10ec:8139",
            nic_slot=0x04,
            video="cirrus",
        ),
        HardwareProfile(
            "xen-hvm-e1000",
            "Xen HVM (emulated IDE, Intel e1000)",
            machine="pc",
            disk_bus="ide",
            nic_model="e1000",
            firmware=("bios",),
            disk_pci="8086:7010",
            nic_pci="8086:100e",
            nic_slot=0x04,
            video="cirrus",
        ),
    )
}

DEFAULT_FOR_KIND = {"kvm": "kvm", "vsphere": "esxi", "hyperv": "hyperv-gen1", "xen": "xen-hvm"}


class UnknownProfile(ValueError):
    pass


def profile(name: str) -> HardwareProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise UnknownProfile(f"unknown hardware profile {name!r}; known: {sorted(PROFILES)}") from None


def for_platform(kind: str, name: str = "") -> HardwareProfile:
    """The profile a platform names, or its kind's default."""
    return profile(name or DEFAULT_FOR_KIND[kind])


# -- first boot on the emulated bus (the "emulated-first" rung) --------------------------------------
EMULATED_BUSES = ("ide", "sata")  # controllers every hypervisor emulates and every old initramfs knows
EMULATED_PCI = {"ide": "8086:7010", "sata": "8086:2922"}  # PIIX3 IDE, ICH9 AHCI
# the guest kernel's driver for each paravirtual controller: what its initramfs must carry to boot on it
PARAVIRTUAL_DRIVERS = {
    "virtio": ("virtio_blk", "virtio_pci"),
    "scsi:virtio-scsi": ("virtio_scsi", "virtio_pci", "sd_mod"),
    "scsi:pvscsi": ("vmw_pvscsi", "sd_mod"),
    "scsi:lsilogic-sas": ("mptsas", "sd_mod"),
    "scsi:lsilogic": ("mptspi", "sd_mod"),
}


def paravirtual_disk(profile: HardwareProfile) -> bool:
    """Whether the profile's boot disk controller is a paravirtual one a guest needs a driver for
    (what the emulated-first rung moves a disk to)."""
    return profile.disk_bus not in EMULATED_BUSES and profile.disk_controller in PARAVIRTUAL_DRIVERS


def emulated_first(source: HardwareProfile, target: HardwareProfile) -> HardwareProfile | None:
    """The target's hardware with the boot disk on an emulated controller, for one boot in which
    the guest adds the target's own controller driver; None when the target's controller is itself
    emulated (nothing to move the disk to afterwards). The controller: the one the guest was
    installed on when that was emulated (its initramfs knows it), else IDE on an i440FX target and
    SATA on a Q35 one (Q35 has no IDE), as an operator picks; whether the guest comes up on it is
    the boot's to say. An IDE disk on a Q35 target moves the VM to i440FX for that boot."""
    if not paravirtual_disk(target):
        return None
    bus = source.disk_bus if source.disk_bus in EMULATED_BUSES else ("ide" if target.machine == "pc" else "sata")
    return replace(
        target,
        name=f"{target.name}+{bus}",
        stands_in_for=f"{target.stands_in_for}, its boot disk on the emulated {bus.upper()} controller",
        machine="pc" if bus == "ide" else target.machine,
        disk_bus=bus,
        scsi_model="",
        disk_pci=EMULATED_PCI[bus],
    )
