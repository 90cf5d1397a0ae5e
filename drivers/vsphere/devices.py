"""Mapping between crossvisor's VmSpec/Hardware vocabulary and vSphere virtual devices.

Pure pyVmomi data objects, no I/O: keeps the driver module about API calls only.
"""

from __future__ import annotations

from pyVmomi import vim

from domain.vm import DiskSpec, NicSpec
from drivers.base import InteropFailure

META_PREFIX = "crossvisor.meta."  # VmSpec.metadata lives in config.extraConfig under this prefix
ANNOTATION_KEY = "annotation"  # ...except this key, which is config.annotation (as in OVF)

NIC_CLASSES: dict[str, type] = {
    "vmxnet3": vim.vm.device.VirtualVmxnet3,
    "vmxnet2": vim.vm.device.VirtualVmxnet2,
    "vmxnet": vim.vm.device.VirtualVmxnet,
    "e1000": vim.vm.device.VirtualE1000,
    "e1000e": vim.vm.device.VirtualE1000e,
    "pcnet32": vim.vm.device.VirtualPCNet32,
}
SCSI_CLASSES: dict[str, type] = {
    "lsilogic": vim.vm.device.VirtualLsiLogicController,
    "lsilogic-sas": vim.vm.device.VirtualLsiLogicSASController,
    "pvscsi": vim.vm.device.ParaVirtualSCSIController,
    "buslogic": vim.vm.device.VirtualBusLogicController,
}
DEFAULT_SCSI = "lsilogic"  # the most widely supported guest driver
SCSI_RESERVED_UNIT = 7  # the controller's own SCSI id
IDE_KEYS = (
    200,
    201,
)  # ESX (and the simulator) create both IDE controllers with every VM


def nic_model(dev: vim.vm.device.VirtualDevice) -> str | None:
    # Most specific class first: VirtualVmxnet3 is a subclass of VirtualVmxnet.
    for name, cls in sorted(NIC_CLASSES.items(), key=lambda kv: -len(kv[1].__mro__)):
        if isinstance(dev, cls):
            return name
    if isinstance(dev, vim.vm.device.VirtualEthernetCard):
        return type(dev).__name__.removeprefix("vim.vm.device.").lower()
    return None


def controller_name(dev: vim.vm.device.VirtualDevice) -> str | None:
    """ "scsi:lsilogic", "ide", "sata", "nvme" — or None if ``dev`` is no disk controller."""
    for sub, cls in SCSI_CLASSES.items():
        if type(dev) is cls:
            return f"scsi:{sub}"
    if isinstance(dev, vim.vm.device.VirtualSCSIController):
        return "scsi"
    if isinstance(dev, vim.vm.device.VirtualIDEController):
        return "ide"
    if isinstance(dev, vim.vm.device.VirtualAHCIController):
        return "sata"
    if isinstance(dev, vim.vm.device.VirtualNVMEController):
        return "nvme"
    return None


def _add(device: vim.vm.device.VirtualDevice, file_op: str | None = None) -> vim.vm.device.VirtualDeviceSpec:
    spec = vim.vm.device.VirtualDeviceSpec(operation="add", device=device)
    if file_op:
        spec.fileOperation = file_op
    return spec


def device_changes(
    disks: list[DiskSpec],
    disk_files: list[str],
    existing: list[bool],
    nics: list[NicSpec],
    network_for: dict[str, str],
) -> list[vim.vm.device.VirtualDeviceSpec]:
    """Controllers, disks (``disk_files[i]`` datastore path; create it unless ``existing[i]``), NICs.

    Raises InteropFailure for buses/models vSphere has no device for (virtio, rtl8139, netvsc...).
    """
    changes: list[vim.vm.device.VirtualDeviceSpec] = []
    ctrl_keys: dict[str, int] = {}
    next_unit: dict[int, int] = {}
    key = -100

    def controller(bus: str) -> int:
        nonlocal key
        if bus in ctrl_keys:
            return ctrl_keys[bus]
        kind, _, sub = bus.partition(":")
        if kind == "ide":
            ctrl_keys[bus] = IDE_KEYS[0]
            return IDE_KEYS[0]
        key -= 1
        if kind == "scsi":
            cls = SCSI_CLASSES.get(sub or DEFAULT_SCSI)
            if cls is None:
                raise InteropFailure(
                    f"vSphere has no SCSI controller type {sub!r} (known: {sorted(SCSI_CLASSES)})",
                    {"disk_bus": bus},
                )
            dev = cls(
                key=key,
                busNumber=sum(1 for b in ctrl_keys if b.startswith("scsi")),
                sharedBus="noSharing",
            )
        elif kind == "sata":
            dev = vim.vm.device.VirtualAHCIController(key=key, busNumber=0)
        elif kind == "nvme":
            dev = vim.vm.device.VirtualNVMEController(key=key, busNumber=0)
        else:
            raise InteropFailure(
                f"vSphere has no {bus!r} disk bus (scsi[:lsilogic|pvscsi|...], ide, sata, nvme)",
                {"disk_bus": bus},
            )
        changes.append(_add(dev))
        ctrl_keys[bus] = key
        return key

    for i, (disk, fname, exists) in enumerate(zip(disks, disk_files, existing, strict=True)):
        ck = controller(disk.bus)
        unit = next_unit.get(ck, 0)
        if disk.bus.startswith("scsi") and unit == SCSI_RESERVED_UNIT:
            unit += 1
        if disk.bus == "ide" and unit >= 2:  # two devices per IDE channel: use the second channel
            ck, unit = IDE_KEYS[1], next_unit.get(IDE_KEYS[1], 0)
        next_unit[ck] = unit + 1
        backing = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
            fileName=fname, diskMode="persistent", thinProvisioned=True
        )
        dev = vim.vm.device.VirtualDisk(
            key=-1000 - i,
            controllerKey=ck,
            unitNumber=unit,
            capacityInKB=max(1, disk.capacity_bytes // 1024),
            backing=backing,
        )
        changes.append(_add(dev, None if exists else "create"))

    for i, nic in enumerate(nics):
        cls = NIC_CLASSES.get(nic.model.lower())
        if cls is None:
            raise InteropFailure(
                f"vSphere has no {nic.model!r} network adapter (known: {sorted(NIC_CLASSES)})",
                {"nic_model": nic.model},
            )
        dev = cls(
            key=-2000 - i,
            backing=vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(deviceName=network_for[nic.network]),
            connectable=vim.vm.device.VirtualDevice.ConnectInfo(startConnected=True, connected=True),
            addressType="manual" if nic.mac else "generated",
        )
        if nic.mac:
            dev.macAddress = nic.mac
        changes.append(_add(dev))
    return changes


def metadata_options(metadata: dict[str, str]) -> list[vim.option.OptionValue]:
    return [vim.option.OptionValue(key=META_PREFIX + k, value=v) for k, v in metadata.items() if k != ANNOTATION_KEY]


def metadata_from_config(config: vim.vm.ConfigInfo) -> dict[str, str]:
    meta = {
        o.key.removeprefix(META_PREFIX): str(o.value) for o in config.extraConfig or [] if o.key.startswith(META_PREFIX)
    }
    if config.annotation:
        meta[ANNOTATION_KEY] = config.annotation
    return meta
