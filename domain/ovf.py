"""Build and parse OVF 1.x / 2.x descriptors (pure: strings in, strings out, no file I/O).

One VirtualSystem is modelled, with what decides whether it moves between hypervisors: CPU
(and cores per socket), memory, disk controllers, disks (placeholders included), CD/DVD drives
and their media, serial ports, NICs, firmware, hardware family, guest OS, VMware Config /
ExtraConfig, ProductSection properties, the OVF environment transport and every file the
package carries (References: disks, ISO images, config files).

Rules taken from DSP0243 (1.x and 2.x) and from what exporters write:

* ``DeploymentOptionSection``: an Item whose ``ovf:configuration`` (a space-separated list) does
  not name the chosen configuration is ignored; Items sharing an ``InstanceID`` are merged, a
  later Item's child element replacing the like-named child of an earlier one. The chosen
  configuration is the one asked for, else the one marked ``ovf:default="true"``, else the first.
  Items with ``ovf:bound="min"|"max"`` describe ranges, not the value, and are skipped.
* Child elements are matched by *local name*: OVF 2.0 moves storage and NIC items to the
  sasd/epasd namespaces while VMware and VirtualBox keep rasd. Attributes prefer the ovf:
  namespace and fall back to unqualified ones (some producers omit the prefix).
* ``HostResource`` is accepted as ``ovf:/disk/<id>``, ``ovf://disk/<id>``, ``/disk/<id>``
  (VirtualBox) and ``ovf:/file/<id>`` (a file used directly, e.g. an ISO).
* ``ResourceSubType`` and ``vssd:VirtualSystemType`` may list alternatives separated by spaces
  ("virtio lsilogic", "VMXNET3 virtio", "vmx-08 vmx-09 vmx-10"): the descriptor keeps the list and
  ``hardware_from_descriptor`` picks one the target supports; a list is never used as a name.
* ProductSection property names are ``class.key.instance`` (class and instance when present);
  crossvisor's own metadata lives in the ``org.crossvisor`` class and keeps bare keys. Password
  properties (``ovf:password="true"``) never enter ``metadata`` (it ends up in workflow history).
* A descriptor that declares a DTD or entities is refused (entity expansion), as is one larger
  than ``MAX_DESCRIPTOR_CHARS``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace

from domain.model import Platform
from domain.vm import DiskSpec, Hardware, NicSpec

OVF1_NS = "http://schemas.dmtf.org/ovf/envelope/1"
OVF2_NS = "http://schemas.dmtf.org/ovf/envelope/2"
RASD_NS = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
VSSD_NS = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
SASD_NS = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_StorageAllocationSettingData.xsd"
EPASD_NS = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_EthernetPortAllocationSettingData.xsd"
VMW_NS = "http://www.vmware.com/schema/ovf"
VBOX_NS = "http://www.virtualbox.org/ovf/machine"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
CIM_NS = "http://schemas.dmtf.org/wbem/wscim/1/common"

# Real descriptors are tens of KiB (a network appliance with hundreds of properties ~100 KiB);
# anything this large is not a descriptor but an attempt to exhaust the parser.
MAX_DESCRIPTOR_CHARS = 8 * 2**20
# The largest virtual disk any target here can create (VMFS-6 stops at 62 TB, qcow2 and VHDX at
# 64 TiB): a bigger ovf:capacity is a malformed package, not a disk to make blank.
MAX_CAPACITY_BYTES = 64 * 2**40

# CIM ResourceType values (DSP1041 / CIM_ResourceAllocationSettingData).
RT_OTHER, RT_CPU, RT_MEMORY, RT_IDE, RT_SCSI, RT_NIC = 1, 3, 4, 5, 6, 10
RT_FLOPPY, RT_CD, RT_DVD, RT_DISK, RT_OTHER_STORAGE, RT_SERIAL = 14, 15, 16, 17, 20, 21
_STORAGE_CONTROLLERS = (RT_IDE, RT_SCSI, RT_OTHER_STORAGE)

# ovf:format URL per disk format. The first URL of each format is what build_ovf writes; the
# others are spellings seen in the wild (older VMware, VirtualBox) that parse_ovf accepts.
DISK_FORMAT_URLS: dict[str, tuple[str, ...]] = {
    "vmdk-streamOptimized": (
        "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized",
        "http://www.vmware.com/specifications/vmdk.html#streamOptimized",
        # VirtualBox's name for its stream-optimized (compressed grains) export
        "http://www.vmware.com/specifications/vmdk.html#compressed",
        "http://www.vmware.com/interfaces/specifications/vmdk.html#compressed",
    ),
    "vmdk-monolithicSparse": (
        "http://www.vmware.com/interfaces/specifications/vmdk.html#sparse",
        "http://www.vmware.com/specifications/vmdk.html#sparse",
        "http://www.vmware.com/interfaces/specifications/vmdk.html#monolithicSparse",
    ),
    "qcow2": ("http://www.gnome.org/~markmc/qcow-image-format.html",),
    "raw": ("http://www.qemu.org/interfaces/specifications/raw",),
    "vhd": (
        "http://go.microsoft.com/fwlink/?LinkId=137171",
        "http://technet.microsoft.com/en-us/virtualization/bb676673.aspx",
    ),
    "vhdx": ("https://learn.microsoft.com/openspecs/windows_protocols/ms-vhdx",),
}
DISK_FORMATS = tuple(DISK_FORMAT_URLS)
_URL_TO_FORMAT = {url.lower(): fmt for fmt, urls in DISK_FORMAT_URLS.items() for url in urls}
# VirtualBox lists CD/DVD images in the DiskSection with this format and attaches them to a
# CD-ROM Item through "/disk/<id>": media, not disks.
ISO_FORMAT_URL = "http://www.ecma-international.org/publications/standards/Ecma-119.htm"

# qemu-img format name of each OVF disk format (the convert stage works in qemu terms).
QEMU_FORMAT = {
    "vmdk-streamOptimized": "vmdk",
    "vmdk-monolithicSparse": "vmdk",
    "qcow2": "qcow2",
    "raw": "raw",
    "vhd": "vpc",
    "vhdx": "vhdx",
}
# A disk given as "ovf:/file/<id>" has no DiskSection entry: its format comes from its name.
_FORMAT_BY_SUFFIX = {
    ".vmdk": "vmdk-streamOptimized",
    ".qcow2": "qcow2",
    ".img": "raw",
    ".raw": "raw",
    ".vhd": "vhd",
    ".vhdx": "vhdx",
}

CONTROLLERS = ("scsi", "ide", "sata", "virtio", "nvme")
COMPRESSIONS = ("", "gzip")  # DSP0243: gzip or none ("identity" is read as none)

# NIC model: NicSpec lowercase name <-> OVF ResourceSubType as VMware/VirtualBox write it.
_NIC_SUBTYPE = {
    "vmxnet3": "VmxNet3",
    "e1000": "E1000",
    "e1000e": "E1000e",
    "virtio": "virtio",
    "rtl8139": "rtl8139",
    "netvsc": "netvsc",
    "pcnet32": "PCNet32",
}
_NIC_ALIASES = {"virtio-net": "virtio", "virtionet": "virtio", "vmxnet": "vmxnet", "vlance": "pcnet32"}

# SCSI controller model: OVF ResourceSubType (lowercase) <-> crossvisor name (as drivers use it).
_SCSI_FROM_OVF = {
    "lsilogic": "lsilogic",
    "lsilogicsas": "lsilogic-sas",
    "lsilogic-sas": "lsilogic-sas",
    "virtualscsi": "pvscsi",
    "pvscsi": "pvscsi",
    "buslogic": "buslogic",
    "virtio": "virtio-scsi",
    "virtio-scsi": "virtio-scsi",
    "virtioscsi": "virtio-scsi",
}
_SCSI_TO_OVF = {"pvscsi": "VirtualSCSI", "lsilogic-sas": "lsilogicsas"}
# SCSI models each target kind has a driver for, most preferred first (a listed alternative the
# target lacks is skipped; see drivers/libvirt/driver.SCSI_MODELS and drivers/vsphere/devices.SCSI_CLASSES).
_SCSI_BY_KIND = {
    "vsphere": ("pvscsi", "lsilogic", "lsilogic-sas", "buslogic"),
    "kvm": ("virtio-scsi", "pvscsi", "lsilogic", "lsilogic-sas", "buslogic"),
    "xen": ("lsilogic", "virtio-scsi", "pvscsi", "lsilogic-sas", "buslogic"),
    "hyperv": ("lsilogic",),
}

METADATA_CLASS = "org.crossvisor"
ANNOTATION_KEY = "annotation"  # metadata key carried in AnnotationSection instead of a Property
_VMX = re.compile(r"^vmx-(\d+)$")
_VERSION = re.compile(r"^[12]\.\d+(?:\.\d+)?$")


class OvfError(ValueError):
    """Malformed or unsupported descriptor; the message names the element/attribute at fault."""


@dataclass
class OvfFile:
    """A References/File entry: any file of the package (disk image, ISO, config file)."""

    href: str
    id: str = ""
    size: int = 0  # ovf:size (bytes as stored, i.e. compressed), 0 = unknown
    compression: str = ""  # "" | "gzip"
    chunk_size: int = 0  # ovf:chunkSize: stored as href.000000000, href.000000001, ...


@dataclass
class OvfDisk:
    file_href: str  # "" for a placeholder disk: create it blank (DSP0243: no ovf:fileRef)
    capacity_bytes: int  # 0 only for a disk given as ovf:/file/<id> (size known once probed)
    format: str  # one of DISK_FORMATS
    controller: str = "scsi"  # scsi | ide | sata | virtio | nvme
    controller_subtype: str = ""  # first ResourceSubType of the controller, verbatim (lsilogic, VirtualSCSI, ...)
    populated_bytes: int = 0
    file_size: int = 0  # References/File ovf:size (bytes of the file as stored), 0 = unknown
    compression: str = ""  # References/File ovf:compression, e.g. "gzip"
    chunk_size: int = 0  # References/File ovf:chunkSize
    # every ResourceSubType the controller lists, in the package's order (empty: just one)
    controller_alternatives: list[str] = field(default_factory=list)
    disk_id: str = field(default="", compare=False)  # DiskSection ovf:diskId (names only)
    file_id: str = field(default="", compare=False)  # References ovf:id


@dataclass
class OvfNic:
    model: str  # first ResourceSubType, verbatim, e.g. VmxNet3, E1000, virtio
    network: str = "default"
    mac: str = ""  # rasd:Address (optional)
    alternatives: list[str] = field(default_factory=list)  # all listed subtypes when more than one


@dataclass
class OvfCdrom:
    bus: str = "ide"  # controller the drive hangs off: ide | sata | scsi
    file_href: str = ""  # media (an ISO among References), "" = empty drive


@dataclass
class OvfSerial:
    connection: str = ""  # rasd:Connection (backing), "" = unconnected
    subtype: str = ""  # rasd:ResourceSubType, e.g. vmware.serialport.device
    description: str = ""  # rasd:Description (appliances say which port is the console)


@dataclass
class OvfProperty:
    key: str
    value: str = ""
    type: str = "string"
    user_configurable: bool = False
    password: bool = False
    label: str = ""
    description: str = ""
    qualifiers: str = ""


@dataclass
class OvfProduct:
    """A ProductSection of another class than crossvisor's (kept verbatim for the round trip)."""

    cls: str = ""  # ovf:class
    instance: str = ""  # ovf:instance
    product: str = ""
    vendor: str = ""
    version: str = ""
    properties: list[OvfProperty] = field(default_factory=list)

    def full_key(self, prop: OvfProperty) -> str:
        """DSP0243 property name: class.key.instance (class and instance only when set)."""
        return ".".join(p for p in (self.cls, prop.key, self.instance) if p)


@dataclass
class OvfConfiguration:
    id: str
    label: str = ""
    description: str = ""
    default: bool = False


@dataclass
class OvfDescriptor:
    name: str
    cpus: int
    memory_mib: int
    disks: list[OvfDisk]
    nics: list[OvfNic]
    firmware: str = "bios"  # bios | efi
    hardware_version: str = ""  # one vssd:VirtualSystemType (see system_types), e.g. "vmx-13"
    metadata: dict[str, str] = field(default_factory=dict)
    ovf_version: str = "1.0"  # verbatim ovf:version: 1.0, 1.1, 1.0.0, 1.1.0, 2.0, 2.0.0, ...
    # every vssd:VirtualSystemType the package lists (empty: just hardware_version)
    system_types: list[str] = field(default_factory=list)
    configuration: str = ""  # the DeploymentOptionSection configuration these values are for
    # all configurations the package offers (build_ovf writes only the chosen one: the items it
    # writes are that configuration's, so offering the others would describe wrong hardware)
    configurations: list[OvfConfiguration] = field(default_factory=list, compare=False)
    cores_per_socket: int = 0
    os_id: int = 0  # CIM OS id (OperatingSystemSection ovf:id)
    os_type: str = ""  # vmw:osType
    os_vbox_type: str = ""  # vbox:OSType
    os_description: str = ""
    vmw_config: dict[str, str] = field(default_factory=dict)  # VirtualHardwareSection vmw:Config (not firmware)
    extra_config: dict[str, str] = field(default_factory=dict)  # vmw:ExtraConfig
    cdroms: list[OvfCdrom] = field(default_factory=list)
    serials: list[OvfSerial] = field(default_factory=list)
    transport: list[str] = field(default_factory=list)  # OVF environment transports, e.g. ["iso"]
    products: list[OvfProduct] = field(default_factory=list)  # foreign ProductSections
    # References files that back no disk of this configuration (ISOs, config files, disks that
    # only other configurations attach): the package must still carry them.
    extra_files: list[OvfFile] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list, compare=False)  # tolerated oddities, for evidence

    def files(self) -> list[OvfFile]:
        """Every file the package must carry, disks first (in disk order), then the others."""
        out = [
            OvfFile(d.file_href, d.file_id, d.file_size, d.compression, d.chunk_size) for d in self.disks if d.file_href
        ]
        return out + [f for f in self.extra_files if f.href not in {o.href for o in out}]


# ---------------------------------------------------------------------------------------- build


def build_ovf(d: OvfDescriptor) -> str:
    """Serialise ``d`` as an OVF envelope (1.x uses rasd Items; 2.x uses StorageItem/EthernetPortItem)."""
    _validate(d)
    ns = OVF2_NS if d.ovf_version.startswith("2") else OVF1_NS
    for prefix, uri in (
        ("ovf", ns),
        ("rasd", RASD_NS),
        ("vssd", VSSD_NS),
        ("sasd", SASD_NS),
        ("epasd", EPASD_NS),
        ("vmw", VMW_NS),
        ("vbox", VBOX_NS),
        ("xsi", XSI_NS),
    ):
        ET.register_namespace(prefix, uri)

    def o(tag: str) -> str:
        return f"{{{ns}}}{tag}"

    env = ET.Element(o("Envelope"), {o("version"): d.ovf_version})
    refs = ET.SubElement(env, o("References"))
    used_ids = {f.id for f in d.extra_files if f.id}
    file_id_of: dict[str, str] = {}
    counters: dict[str, int] = {}

    def new_id(prefix: str, taken: set[str]) -> str:
        while True:
            counters[prefix] = counters.get(prefix, 0) + 1
            cand = f"{prefix}{counters[prefix]}"
            if cand not in taken:
                taken.add(cand)
                return cand

    for disk in d.disks:
        if disk.file_href and disk.file_href not in file_id_of:
            fid = disk.file_id if disk.file_id and disk.file_id not in used_ids else new_id("file", used_ids)
            used_ids.add(fid)
            file_id_of[disk.file_href] = fid
    for f in d.extra_files:
        if f.href not in file_id_of:
            fid = f.id or new_id("file", used_ids)
            file_id_of[f.href] = fid
    for f in d.files():
        attrs = {o("href"): f.href, o("id"): file_id_of[f.href]}
        if f.size:
            attrs[o("size")] = str(f.size)
        if f.compression:
            attrs[o("compression")] = f.compression
        if f.chunk_size:
            attrs[o("chunkSize")] = str(f.chunk_size)
        ET.SubElement(refs, o("File"), attrs)

    disk_sec = ET.SubElement(env, o("DiskSection"))
    ET.SubElement(disk_sec, o("Info")).text = "Virtual disk information"
    disk_ids: list[str] = []
    taken_disk_ids = {x.disk_id for x in d.disks if x.disk_id}
    for disk in d.disks:
        did = disk.disk_id if disk.disk_id and disk.disk_id not in disk_ids else new_id("vmdisk", taken_disk_ids)
        disk_ids.append(did)
        if disk.file_href and not disk.capacity_bytes:
            continue  # a file used directly (HostResource ovf:/file/<id>): no DiskSection entry
        attrs = {
            o("capacity"): str(disk.capacity_bytes),
            o("capacityAllocationUnits"): "byte",
            o("diskId"): did,
            o("format"): DISK_FORMAT_URLS[disk.format][0],
        }
        if disk.file_href:
            attrs[o("fileRef")] = file_id_of[disk.file_href]
        if disk.populated_bytes:
            attrs[o("populatedSize")] = str(disk.populated_bytes)
        ET.SubElement(disk_sec, o("Disk"), attrs)

    networks = list(dict.fromkeys(n.network for n in d.nics))
    if networks:
        net_sec = ET.SubElement(env, o("NetworkSection"))
        ET.SubElement(net_sec, o("Info")).text = "The list of logical networks"
        for net in networks:
            n_el = ET.SubElement(net_sec, o("Network"), {o("name"): net})
            ET.SubElement(n_el, o("Description")).text = f"The {net} network"

    if d.configuration:
        chosen = next((c for c in d.configurations if c.id == d.configuration), OvfConfiguration(d.configuration))
        dep = ET.SubElement(env, o("DeploymentOptionSection"))
        ET.SubElement(dep, o("Info")).text = "Deployment configuration (the one these items describe)"
        c_el = ET.SubElement(dep, o("Configuration"), {o("id"): chosen.id, o("default"): "true"})
        ET.SubElement(c_el, o("Label")).text = chosen.label or chosen.id
        ET.SubElement(c_el, o("Description")).text = chosen.description or chosen.label or chosen.id

    vs = ET.SubElement(env, o("VirtualSystem"), {o("id"): d.name})
    ET.SubElement(vs, o("Info")).text = "A virtual machine"
    ET.SubElement(vs, o("Name")).text = d.name
    if d.os_id or d.os_type or d.os_vbox_type or d.os_description:
        os_attrs = {o("id"): str(d.os_id)}
        if d.os_type:
            os_attrs[f"{{{VMW_NS}}}osType"] = d.os_type
        os_sec = ET.SubElement(vs, o("OperatingSystemSection"), os_attrs)
        ET.SubElement(os_sec, o("Info")).text = "The kind of installed guest operating system"
        if d.os_description:
            ET.SubElement(os_sec, o("Description")).text = d.os_description
        if d.os_vbox_type:
            ET.SubElement(os_sec, f"{{{VBOX_NS}}}OSType", {o("required"): "false"}).text = d.os_vbox_type
    meta = dict(d.metadata)
    if ANNOTATION_KEY in meta:
        ann = ET.SubElement(vs, o("AnnotationSection"))
        ET.SubElement(ann, o("Info")).text = "A human-readable annotation"
        ET.SubElement(ann, o("Annotation")).text = meta.pop(ANNOTATION_KEY)
    for prod in d.products:
        for prop in prod.properties:
            meta.pop(prod.full_key(prop), None)  # carried by the product section itself
        _product_section(vs, o, prod)
    if meta:
        own = OvfProduct(METADATA_CLASS, properties=[OvfProperty(k, v) for k, v in meta.items()])
        _product_section(vs, o, own, info="crossvisor metadata")

    hw_attrs = {o("transport"): " ".join(d.transport)} if d.transport else {}
    hw = ET.SubElement(vs, o("VirtualHardwareSection"), hw_attrs)
    ET.SubElement(hw, o("Info")).text = "Virtual hardware requirements"
    system = ET.SubElement(hw, o("System"))
    ET.SubElement(system, f"{{{VSSD_NS}}}ElementName").text = "Virtual Hardware Family"
    ET.SubElement(system, f"{{{VSSD_NS}}}InstanceID").text = "0"
    ET.SubElement(system, f"{{{VSSD_NS}}}VirtualSystemIdentifier").text = d.name
    types = (
        d.system_types if d.hardware_version in d.system_types else [d.hardware_version] if d.hardware_version else []
    )
    if types:
        ET.SubElement(system, f"{{{VSSD_NS}}}VirtualSystemType").text = " ".join(types)

    v2 = ns == OVF2_NS
    ids = iter(range(1, 100_000))

    def item(kind: str, fields: list[tuple[str, str]], vmw: list[ET.Element] | None = None) -> None:
        # OVF 2.0 puts storage and NICs in their own element/namespace; 1.0 uses rasd Items.
        tag, fns = "Item", RASD_NS
        if v2 and kind == "storage":
            tag, fns = "StorageItem", SASD_NS
        elif v2 and kind == "nic":
            tag, fns = "EthernetPortItem", EPASD_NS
        el = ET.SubElement(hw, o(tag))
        # CIM schemas require alphabetical element order inside an Item; extensions come last.
        for k, v in sorted(fields):
            ET.SubElement(el, f"{{{fns}}}{k}").text = v
        for extra in vmw or []:
            el.append(extra)

    cpu_extra = []
    if d.cores_per_socket:
        cps = ET.Element(f"{{{VMW_NS}}}CoresPerSocket", {o("required"): "false"})
        cps.text = str(d.cores_per_socket)
        cpu_extra.append(cps)
    item(
        "cpu",
        [
            ("AllocationUnits", "hertz * 10^6"),
            ("Description", "Number of Virtual CPUs"),
            ("ElementName", f"{d.cpus} virtual CPU(s)"),
            ("InstanceID", str(next(ids))),
            ("ResourceType", str(RT_CPU)),
            ("VirtualQuantity", str(d.cpus)),
        ],
        cpu_extra,
    )
    item(
        "memory",
        [
            ("AllocationUnits", "byte * 2^20"),
            ("Description", "Memory Size"),
            ("ElementName", f"{d.memory_mib}MB of memory"),
            ("InstanceID", str(next(ids))),
            ("ResourceType", str(RT_MEMORY)),
            ("VirtualQuantity", str(d.memory_mib)),
        ],
    )
    ctrl_ids: dict[tuple[str, str], str] = {}
    ctrl_keys = [(x.controller, " ".join(x.controller_alternatives) or x.controller_subtype) for x in d.disks]
    ctrl_keys += [(c.bus, "") for c in d.cdroms if not any(k[0] == c.bus for k in ctrl_keys)]
    for key in ctrl_keys:
        if key in ctrl_ids:
            continue
        cid = str(next(ids))
        ctrl_ids[key] = cid
        rtype, subtype = _controller_rasd(*key)
        fields = [
            ("Address", str(sum(1 for k in ctrl_ids if k[0] == key[0]) - 1)),
            ("Description", f"{key[0].upper()} Controller"),
            ("ElementName", f"{key[0].upper()} controller {len(ctrl_ids) - 1}"),
            ("InstanceID", cid),
            ("ResourceType", str(rtype)),
        ]
        if subtype:
            fields.append(("ResourceSubType", subtype))
        item("controller", fields)
    per_ctrl: dict[str, int] = {}

    def unit_on(parent: str) -> str:
        unit = per_ctrl.get(parent, 0)
        per_ctrl[parent] = unit + 1
        return str(unit)

    for i, disk in enumerate(d.disks, 1):
        parent = ctrl_ids[(disk.controller, " ".join(disk.controller_alternatives) or disk.controller_subtype)]
        host = (
            f"ovf:/file/{file_id_of[disk.file_href]}"
            if disk.file_href and not disk.capacity_bytes
            else f"ovf:/disk/{disk_ids[i - 1]}"
        )
        item(
            "storage",
            [
                ("AddressOnParent", unit_on(parent)),
                ("ElementName", f"Hard disk {i}"),
                ("HostResource", host),
                ("InstanceID", str(next(ids))),
                ("Parent", parent),
                ("ResourceType", str(RT_DISK)),
            ],
        )
    for i, cd in enumerate(d.cdroms, 1):
        parent = next(cid for (bus, _), cid in ctrl_ids.items() if bus == cd.bus)
        fields = [
            ("AddressOnParent", unit_on(parent)),
            ("AutomaticAllocation", "true" if cd.file_href else "false"),
            ("ElementName", f"CD-ROM {i}"),
            ("InstanceID", str(next(ids))),
            ("Parent", parent),
            ("ResourceType", str(RT_CD)),
        ]
        if cd.file_href:
            fields.append(("HostResource", f"ovf:/file/{file_id_of[cd.file_href]}"))
        item("storage", fields)
    for i, ser in enumerate(d.serials, 1):
        fields = [
            ("AutomaticAllocation", "true" if ser.connection else "false"),
            ("ElementName", f"Serial port {i}"),
            ("InstanceID", str(next(ids))),
            ("ResourceType", str(RT_SERIAL)),
        ]
        for k, v in (
            ("Connection", ser.connection),
            ("ResourceSubType", ser.subtype),
            ("Description", ser.description),
        ):
            if v:
                fields.append((k, v))
        item("serial", fields)
    for i, nic in enumerate(d.nics, 1):
        fields = [
            ("AutomaticAllocation", "true"),
            ("Connection", nic.network),
            ("ElementName", f"Network adapter {i}"),
            ("InstanceID", str(next(ids))),
            ("ResourceSubType", " ".join(nic.alternatives) or nic.model),
            ("ResourceType", str(RT_NIC)),
        ]
        if nic.mac:
            fields.append(("Address", nic.mac))
        item("nic", fields)
    config = dict(d.vmw_config)
    if d.firmware != "bios":
        # VMware's own spelling: ovftool and vCenter read firmware from this vmw:Config key.
        config["firmware"] = d.firmware
    for tag, entries in (("Config", config), ("ExtraConfig", d.extra_config)):
        for k, v in entries.items():
            ET.SubElement(
                hw,
                f"{{{VMW_NS}}}{tag}",
                {o("required"): "false", f"{{{VMW_NS}}}key": k, f"{{{VMW_NS}}}value": v},
            )
    ET.indent(env, space="  ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(env, encoding="unicode") + "\n"


def _product_section(parent: ET.Element, o, prod: OvfProduct, info: str = "Information about the installed software"):
    attrs = {}
    if prod.cls:
        attrs[o("class")] = prod.cls
    if prod.instance:
        attrs[o("instance")] = prod.instance
    sec = ET.SubElement(parent, o("ProductSection"), attrs)
    ET.SubElement(sec, o("Info")).text = info
    for tag, text in (("Product", prod.product), ("Vendor", prod.vendor), ("Version", prod.version)):
        if text:
            ET.SubElement(sec, o(tag)).text = text
    for prop in prod.properties:
        attrs = {o("key"): prop.key, o("type"): prop.type or "string", o("value"): prop.value}
        if prop.user_configurable:
            attrs[o("userConfigurable")] = "true"
        if prop.password:
            attrs[o("password")] = "true"
        if prop.qualifiers:
            attrs[o("qualifiers")] = prop.qualifiers
        p_el = ET.SubElement(sec, o("Property"), attrs)
        if prop.label:
            ET.SubElement(p_el, o("Label")).text = prop.label
        if prop.description:
            ET.SubElement(p_el, o("Description")).text = prop.description


def _validate(d: OvfDescriptor) -> None:
    if not _VERSION.match(d.ovf_version):
        raise OvfError(f"ovf_version {d.ovf_version!r} unsupported (1.x or 2.x, e.g. 1.0, 1.1.0, 2.0.0)")
    if not d.name:
        raise OvfError("VirtualSystem ovf:id: name is empty")
    if d.cpus < 1 or d.memory_mib < 1:
        raise OvfError(f"cpus={d.cpus} memory_mib={d.memory_mib}: both must be >= 1")
    for disk in d.disks:
        if disk.format not in DISK_FORMAT_URLS:
            raise OvfError(f"Disk ovf:format {disk.format!r} unknown (one of {DISK_FORMATS})")
        if disk.controller not in CONTROLLERS:
            raise OvfError(f"disk controller {disk.controller!r} unknown (one of {CONTROLLERS})")
        if disk.capacity_bytes < 0 or (disk.capacity_bytes == 0 and not disk.file_href):
            raise OvfError(f"Disk {disk.file_href or '(placeholder)'!r} ovf:capacity must be > 0")
        if disk.compression not in COMPRESSIONS:
            raise OvfError(f"Disk {disk.file_href!r} ovf:compression {disk.compression!r} unsupported (gzip or none)")
    for cd in d.cdroms:
        if cd.bus not in ("ide", "sata", "scsi"):
            raise OvfError(f"CD-ROM bus {cd.bus!r} unknown (ide, sata or scsi)")
        if cd.file_href and cd.file_href not in {f.href for f in d.extra_files}:
            raise OvfError(f"CD-ROM media {cd.file_href!r} is not among the extra files (References)")
    hrefs = [f.href for f in d.files()]
    disk_hrefs = [x.file_href for x in d.disks if x.file_href]
    if len(disk_hrefs) != len(set(disk_hrefs)) or len(hrefs) != len(set(hrefs)):
        raise OvfError(f"References/File ovf:href duplicated: {hrefs}")


def _controller_rasd(controller: str, subtype: str) -> tuple[int, str]:
    if controller == "scsi":
        return RT_SCSI, subtype
    if controller == "ide":
        return RT_IDE, subtype
    if controller == "virtio":
        return RT_OTHER_STORAGE, subtype or "virtio"  # marks virtio-blk among type-20 controllers
    if controller == "nvme":
        return RT_OTHER_STORAGE, subtype or "vmware.nvme.controller"
    return RT_OTHER_STORAGE, subtype  # sata: VMware writes vmware.sata.ahci, VirtualBox AHCI


def _controller_from_rasd(rtype: int, subtype: str) -> tuple[str, str]:
    first = subtype.split()[0] if subtype.split() else ""
    low = first.lower()
    if rtype == RT_SCSI:
        return "scsi", first
    if rtype == RT_IDE:
        return "ide", first
    if low in ("virtioscsi", "virtio-scsi"):  # VirtualBox: virtio-scsi is a type-20 controller
        return "scsi", first
    if low.startswith("virtio"):
        return "virtio", "" if low == "virtio" else first
    if "nvme" in low:
        return "nvme", first
    return "sata", first


# ---------------------------------------------------------------------------------------- parse


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _children(el: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in el if _local(c.tag) == name]


def _child(el: ET.Element, name: str) -> ET.Element | None:
    found = _children(el, name)
    return found[0] if found else None


def _text(el: ET.Element | None, name: str) -> str:
    c = _child(el, name) if el is not None else None
    return (c.text or "").strip() if c is not None else ""


def _attr(el: ET.Element, ns: str, name: str) -> str | None:
    value = el.get(f"{{{ns}}}{name}")
    return el.get(name) if value is None else value


def _int(text: str | None, where: str) -> int:
    try:
        return int((text or "").strip())
    except ValueError:
        raise OvfError(f"{where}: {text!r} is not an integer") from None


def _bool(text: str | None) -> bool:
    return (text or "").strip().lower() in ("true", "1")


_UNITS_RE = re.compile(r"^\s*byte\s*(?:\*\s*(\d+)\s*(?:\^\s*(\d+))?)?\s*$", re.IGNORECASE)
_UNIT_WORDS = {
    "bytes": 1,
    "kilobytes": 2**10,
    "kb": 2**10,
    "megabytes": 2**20,
    "mb": 2**20,
    "gigabytes": 2**30,
    "gb": 2**30,
}


def _unit_multiplier(units: str, where: str) -> int:
    """Programmatic units per DSP0004 ("byte * 2^20"), plus the word forms VirtualBox writes."""
    m = _UNITS_RE.match(units)
    if m:
        base, exp = m.group(1), m.group(2)
        if base is None:
            return 1
        if exp and int(exp) > 64:
            raise OvfError(f"{where}: allocation units {units!r} out of range")
        return int(base) ** int(exp) if exp else int(base)
    if units.strip().lower() in _UNIT_WORDS:
        return _UNIT_WORDS[units.strip().lower()]
    raise OvfError(f"{where}: unsupported allocation units {units!r}")


_HOST_RESOURCE = re.compile(r"^(?:ovf:)?/+(disk|file)/(.+)$")
_DTD = re.compile(r"<!(?:DOCTYPE|ENTITY)", re.IGNORECASE)


def parse_ovf(xml_text: str, configuration: str | None = None) -> OvfDescriptor:
    """Parse one VirtualSystem for ``configuration`` (None: the package's default one)."""
    if len(xml_text) > MAX_DESCRIPTOR_CHARS:
        raise OvfError(f"descriptor is {len(xml_text)} characters (limit {MAX_DESCRIPTOR_CHARS}): not a descriptor")
    if _DTD.search(xml_text):
        raise OvfError("descriptor declares a DTD or entities: refused (entity expansion); OVF needs neither")
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        raise OvfError(f"descriptor is not well-formed XML: {exc}") from None
    if _local(root.tag) != "Envelope":
        raise OvfError(f"root element is <{_local(root.tag)}>, expected <Envelope>")
    ns = root.tag[1:].split("}")[0] if root.tag.startswith("{") else ""
    if ns not in (OVF1_NS, OVF2_NS):
        raise OvfError(f"Envelope namespace {ns!r} is neither OVF 1.x ({OVF1_NS}) nor 2.x")
    warnings: list[str] = []
    version = (_attr(root, ns, "version") or ("2.0" if ns == OVF2_NS else "1.0")).strip()
    if not _VERSION.match(version):
        raise OvfError(f"Envelope ovf:version {version!r} unsupported (1.x or 2.x)")
    if version[0] != ("2" if ns == OVF2_NS else "1"):
        warnings.append(f"Envelope ovf:version {version} does not match its namespace {ns}")

    files = _parse_references(root, ns)

    if _child(root, "VirtualSystemCollection") is not None:
        raise OvfError("VirtualSystemCollection (multi-VM vApp) is not supported")
    vs = _child(root, "VirtualSystem")
    if vs is None:
        raise OvfError("Envelope has no VirtualSystem element")
    name = _text(vs, "Name") or (_attr(vs, ns, "id") or "").strip()
    if not name:
        raise OvfError("VirtualSystem: neither Name nor ovf:id is set")

    metadata, products, prop_values = _parse_products(vs, ns)
    disks, isos = _parse_disk_section(root, ns, files, prop_values)
    configurations, chosen = _choose_configuration(root, ns, configuration, warnings)

    os_id, os_type, os_vbox, os_desc = 0, "", "", ""
    os_sec = _child(vs, "OperatingSystemSection")
    if os_sec is not None:
        raw_id = _attr(os_sec, ns, "id") or "0"
        try:
            os_id = int(raw_id)
        except ValueError:
            warnings.append(f"OperatingSystemSection ovf:id {raw_id!r} is not an integer (ignored)")
        os_type = os_sec.get(f"{{{VMW_NS}}}osType") or ""
        os_vbox = _text(os_sec, "OSType")
        os_desc = _text(os_sec, "Description")

    hw_secs = _children(vs, "VirtualHardwareSection")
    if not hw_secs:
        raise OvfError(f"VirtualSystem {name!r} has no VirtualHardwareSection")
    hw = hw_secs[0]  # several sections = alternatives per platform; the first is the default
    transport = (_attr(hw, ns, "transport") or "").split()
    system_types = _text(_child(hw, "System"), "VirtualSystemType").split()

    items, attached_anywhere = _items_for(hw, ns, chosen, {c.id for c in configurations}, warnings)

    cpus = memory_mib = cores = 0
    controllers: dict[str, tuple[str, str, list[str]]] = {}
    disk_items: list[tuple[str, str, str]] = []  # (instance id, host resource, parent)
    cd_items: list[tuple[str, str, str]] = []
    nics: list[OvfNic] = []
    serials: list[OvfSerial] = []
    for iid, tag, fields, extras in items:
        where = f"VirtualHardwareSection/{tag} InstanceID={iid}"
        if "ResourceType" not in fields:
            raise OvfError(f"{where}: missing ResourceType")
        rtype = _int(fields["ResourceType"], f"{where} ResourceType")
        if rtype == RT_CPU:
            cpus = _int(fields.get("VirtualQuantity"), f"{where} (CPU) VirtualQuantity")
            if "CoresPerSocket" in extras:
                cores = _int(extras["CoresPerSocket"], f"{where} (CPU) vmw:CoresPerSocket")
        elif rtype == RT_MEMORY:
            qty = _int(fields.get("VirtualQuantity"), f"{where} (memory) VirtualQuantity")
            nbytes = qty * _unit_multiplier(
                fields.get("AllocationUnits") or "byte * 2^20",
                f"{where} (memory) AllocationUnits",
            )
            if nbytes % 2**20:
                raise OvfError(f"{where} (memory): {nbytes} bytes is not a whole number of MiB")
            memory_mib = nbytes // 2**20
        elif rtype in _STORAGE_CONTROLLERS:
            sub = fields.get("ResourceSubType", "")
            bus, first = _controller_from_rasd(rtype, sub)
            alts = sub.split()
            controllers[iid] = (bus, first, alts if len(alts) > 1 else [])
        elif rtype == RT_DISK:
            host = fields.get("HostResource", "")
            if not host:
                raise OvfError(f"{where} (disk): missing HostResource")
            disk_items.append((iid, host, fields.get("Parent", "")))
        elif rtype in (RT_CD, RT_DVD):
            cd_items.append((iid, fields.get("HostResource", ""), fields.get("Parent", "")))
        elif rtype == RT_SERIAL:
            serials.append(
                OvfSerial(
                    connection=fields.get("Connection", ""),
                    subtype=fields.get("ResourceSubType", ""),
                    description=fields.get("Description", ""),
                )
            )
        elif rtype == RT_NIC:
            subs = fields.get("ResourceSubType", "").split()
            nics.append(
                OvfNic(
                    model=subs[0] if subs else "",
                    network=fields.get("Connection", "") or "default",
                    mac=fields.get("Address", ""),
                    alternatives=subs if len(subs) > 1 else [],
                )
            )
    if cpus < 1:
        raise OvfError("VirtualHardwareSection: no CPU Item (ResourceType 3) with VirtualQuantity >= 1")
    if memory_mib < 1:
        raise OvfError("VirtualHardwareSection: no memory Item (ResourceType 4) with VirtualQuantity >= 1")

    def controller_of(parent: str, where: str) -> tuple[str, str, list[str]]:
        if parent in controllers:
            return controllers[parent]
        if not parent and len(controllers) == 1:
            return next(iter(controllers.values()))  # one controller: nothing else it could hang off
        raise OvfError(f"{where}: Parent {parent!r} matches no controller Item InstanceID")

    ordered: list[OvfDisk] = []
    used: set[str] = set()
    used_files: set[str] = set()
    for iid, host, parent in disk_items:
        where = f"VirtualHardwareSection/Item InstanceID={iid} (disk)"
        m = _HOST_RESOURCE.match(host)
        if not m:
            raise OvfError(f"{where}: HostResource {host!r} is not ovf:/disk/<diskId> or ovf:/file/<fileId>")
        kind, ref = m.group(1), m.group(2)
        if kind == "file":
            if ref not in files:
                raise OvfError(f"{where}: HostResource {host!r} matches no References/File ovf:id")
            f = files[ref]
            fmt = _FORMAT_BY_SUFFIX.get(_suffix(f.href))
            if fmt is None:
                raise OvfError(f"{where}: HostResource {host!r}: cannot tell the disk format of {f.href!r}")
            disk = OvfDisk(f.href, 0, fmt, file_size=f.size, compression=f.compression, chunk_size=f.chunk_size)
            disk.file_id = f.id
            key = f"file:{ref}"
        else:
            if ref in isos:
                raise OvfError(f"{where}: HostResource {host!r} is an ISO image (attach it to a CD-ROM Item)")
            if ref not in disks:
                raise OvfError(f"{where}: HostResource {host!r} matches no DiskSection/Disk ovf:diskId")
            disk = replace(disks[ref])
            key = ref
        if key in used:
            raise OvfError(f"{where}: {host!r} attached twice")
        used.add(key)
        disk.controller, disk.controller_subtype, disk.controller_alternatives = controller_of(parent, where)
        disk.controller_alternatives = list(disk.controller_alternatives)
        if disk.file_href:
            used_files.add(disk.file_href)
        ordered.append(disk)
    for did in disks:
        if did not in used and did not in attached_anywhere:
            raise OvfError(f"DiskSection/Disk {did!r} is not attached by any disk Item (ResourceType 17)")

    cdroms: list[OvfCdrom] = []
    for iid, host, parent in cd_items:
        where = f"VirtualHardwareSection/Item InstanceID={iid} (CD/DVD)"
        bus = controllers.get(parent, ("ide", "", []))[0]
        bus = bus if bus in ("ide", "sata", "scsi") else "ide"
        href = ""
        if host:
            m = _HOST_RESOURCE.match(host)
            if not m:
                raise OvfError(f"{where}: HostResource {host!r} is not ovf:/file/<fileId> or ovf:/disk/<diskId>")
            kind, ref = m.group(1), m.group(2)
            if kind == "file":
                if ref not in files:
                    raise OvfError(f"{where}: HostResource {host!r} matches no References/File ovf:id")
                href = files[ref].href
            elif ref in isos:
                href = isos[ref]
            elif ref in disks and disks[ref].file_href:
                href = disks[ref].file_href
            else:
                raise OvfError(f"{where}: HostResource {host!r} matches no ISO image")
        cdroms.append(OvfCdrom(bus, href))

    vmw_config: dict[str, str] = {}
    extra_config: dict[str, str] = {}
    firmware = "bios"
    for el in hw:
        tag = _local(el.tag)
        if tag not in ("Config", "ExtraConfig") or not el.tag.startswith(f"{{{VMW_NS}}}"):
            continue
        key = el.get(f"{{{VMW_NS}}}key") or ""
        value = el.get(f"{{{VMW_NS}}}value") or ""
        if not key:
            raise OvfError(f"VirtualHardwareSection/vmw:{tag}: missing vmw:key")
        if tag == "Config" and key == "firmware":
            firmware = value.lower() or "bios"
        elif tag == "Config":
            vmw_config[key] = value
        else:
            extra_config[key] = value
    vbox_fw = _vbox_firmware(vs)
    if vbox_fw:
        firmware = vbox_fw
    if firmware not in ("bios", "efi"):
        warnings.append(f"firmware {firmware!r} read as efi")
        firmware = "efi" if "efi" in firmware else "bios"

    extra_files = [f for f in files.values() if f.href not in used_files]
    return OvfDescriptor(
        name=name,
        cpus=cpus,
        memory_mib=memory_mib,
        disks=ordered,
        nics=nics,
        firmware=firmware,
        hardware_version=choose_system_type(system_types),
        metadata=metadata,
        ovf_version=version,
        system_types=system_types if len(system_types) > 1 else [],
        configuration=chosen,
        configurations=configurations,
        cores_per_socket=cores,
        os_id=os_id,
        os_type=os_type,
        os_vbox_type=os_vbox,
        os_description=os_desc,
        vmw_config=vmw_config,
        extra_config=extra_config,
        cdroms=cdroms,
        serials=serials,
        transport=transport,
        products=products,
        extra_files=extra_files,
        warnings=warnings,
    )


def _suffix(href: str) -> str:
    name = href.rsplit("/", 1)[-1].lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return "." + name.rsplit(".", 1)[-1] if "." in name else ""


def _parse_references(root: ET.Element, ns: str) -> dict[str, OvfFile]:
    files: dict[str, OvfFile] = {}
    hrefs: set[str] = set()
    refs = _child(root, "References")
    for f in _children(refs, "File") if refs is not None else []:
        fid, href = _attr(f, ns, "id"), _attr(f, ns, "href")
        if not fid:
            raise OvfError("References/File: missing ovf:id")
        if not href:
            raise OvfError(f"References/File {fid!r}: missing ovf:href")
        if fid in files:
            raise OvfError(f"References/File ovf:id {fid!r} appears twice")
        if href in hrefs:
            raise OvfError(f"References/File ovf:href {href!r} appears twice (DSP0243: one File per file)")
        hrefs.add(href)
        size = _attr(f, ns, "size")
        chunk = _attr(f, ns, "chunkSize")
        compression = (_attr(f, ns, "compression") or "").strip().lower()
        if compression == "identity":
            compression = ""
        if compression not in COMPRESSIONS:
            raise OvfError(f"References/File {fid!r}: ovf:compression {compression!r} unsupported (gzip or none)")
        files[fid] = OvfFile(
            href=href,
            id=fid,
            size=_int(size, f"References/File {fid!r} ovf:size") if size else 0,
            compression=compression,
            chunk_size=_int(chunk, f"References/File {fid!r} ovf:chunkSize") if chunk else 0,
        )
        if files[fid].size < 0 or files[fid].chunk_size < 0:
            raise OvfError(f"References/File {fid!r}: negative ovf:size or ovf:chunkSize")
    return files


def _parse_products(vs: ET.Element, ns: str) -> tuple[dict[str, str], list[OvfProduct], dict[str, str]]:
    """(metadata, foreign product sections, key -> value for ${key} references)."""
    metadata: dict[str, str] = {}
    products: list[OvfProduct] = []
    values: dict[str, str] = {}
    ann_sec = _child(vs, "AnnotationSection")
    if ann_sec is not None:
        ann = _child(ann_sec, "Annotation")
        if ann is not None and ann.text:
            metadata[ANNOTATION_KEY] = ann.text
    for sec in _children(vs, "ProductSection"):
        cls = (_attr(sec, ns, "class") or "").strip()
        prod = OvfProduct(
            cls=cls,
            instance=(_attr(sec, ns, "instance") or "").strip(),
            product=_text(sec, "Product"),
            vendor=_text(sec, "Vendor"),
            version=_text(sec, "Version"),
        )
        for p in _children(sec, "Property"):
            key = _attr(p, ns, "key")
            if not key:
                raise OvfError(f"ProductSection {cls!r}/Property: missing ovf:key")
            prop = OvfProperty(
                key=key,
                value=_attr(p, ns, "value") or "",
                type=_attr(p, ns, "type") or "string",
                user_configurable=_bool(_attr(p, ns, "userConfigurable")),
                password=_bool(_attr(p, ns, "password")),
                label=_text(p, "Label"),
                description=_text(p, "Description"),
                qualifiers=_attr(p, ns, "qualifiers") or "",
            )
            prod.properties.append(prop)
            values.setdefault(key, prop.value)
            values.setdefault(prod.full_key(prop), prop.value)
            if prop.password:
                continue  # a secret: kept in the descriptor, never in metadata (history, reports)
            metadata[key if cls == METADATA_CLASS and not prod.instance else prod.full_key(prop)] = prop.value
        if cls != METADATA_CLASS or prod.instance:
            products.append(prod)
    return metadata, products, values


def _parse_disk_section(
    root: ET.Element, ns: str, files: dict[str, OvfFile], prop_values: dict[str, str]
) -> tuple[dict[str, OvfDisk], dict[str, str]]:
    """(disk id -> OvfDisk, ISO disk id -> href); controllers are filled in from the items."""
    disks: dict[str, OvfDisk] = {}
    isos: dict[str, str] = {}
    disk_sec = _child(root, "DiskSection")
    for el in _children(disk_sec, "Disk") if disk_sec is not None else []:
        did = _attr(el, ns, "diskId")
        if not did:
            raise OvfError("DiskSection/Disk: missing ovf:diskId")
        where = f"DiskSection/Disk {did!r}"
        if did in disks or did in isos:
            raise OvfError(f"{where}: ovf:diskId appears twice")
        ref = _attr(el, ns, "fileRef")
        if ref and ref not in files:
            raise OvfError(f"{where}: ovf:fileRef {ref!r} matches no References/File ovf:id")
        fmt_url = (_attr(el, ns, "format") or "").strip()
        if fmt_url.lower() == ISO_FORMAT_URL.lower():
            if not ref:
                raise OvfError(f"{where}: an ISO image without ovf:fileRef")
            isos[did] = files[ref].href
            continue
        cap = _attr(el, ns, "capacity")
        if cap is None:
            raise OvfError(f"{where}: missing ovf:capacity")
        m = re.fullmatch(r"\s*\$\{([^}]+)\}\s*", cap)
        if m:  # DSP0243: the capacity may name a ProductSection property holding it
            if m.group(1) not in prop_values:
                raise OvfError(f"{where}: ovf:capacity {cap!r} names no ProductSection property")
            cap = prop_values[m.group(1)]
        units = _attr(el, ns, "capacityAllocationUnits") or "byte"
        capacity = _int(cap, f"{where} ovf:capacity") * _unit_multiplier(units, f"{where} ovf:capacityAllocationUnits")
        if capacity <= 0 or capacity > MAX_CAPACITY_BYTES:
            raise OvfError(f"{where}: ovf:capacity {capacity} out of range (1 byte .. {MAX_CAPACITY_BYTES})")
        fmt = _URL_TO_FORMAT.get(fmt_url.lower())
        if fmt is None:
            if ref:
                raise OvfError(f"{where}: unknown ovf:format {fmt_url!r}")
            fmt = "raw"  # a placeholder disk is created blank: its format is ours to choose
        f = files[ref] if ref else OvfFile("")
        pop = _attr(el, ns, "populatedSize")
        disk = OvfDisk(
            file_href=f.href,
            capacity_bytes=capacity,
            format=fmt,
            populated_bytes=_int(pop, f"{where} ovf:populatedSize") if pop else 0,
            file_size=f.size,
            compression=f.compression,
            chunk_size=f.chunk_size,
        )
        disk.disk_id, disk.file_id = did, f.id
        disks[did] = disk
    return disks, isos


def _choose_configuration(
    root: ET.Element, ns: str, wanted: str | None, warnings: list[str]
) -> tuple[list[OvfConfiguration], str]:
    configs: list[OvfConfiguration] = []
    sec = _child(root, "DeploymentOptionSection")
    for c in _children(sec, "Configuration") if sec is not None else []:
        cid = (_attr(c, ns, "id") or "").strip()
        if not cid:
            raise OvfError("DeploymentOptionSection/Configuration: missing ovf:id")
        if any(x.id == cid for x in configs):
            raise OvfError(f"DeploymentOptionSection/Configuration ovf:id {cid!r} appears twice")
        configs.append(
            OvfConfiguration(cid, _text(c, "Label"), _text(c, "Description"), _bool(_attr(c, ns, "default")))
        )
    if wanted:
        if not configs:
            raise OvfError(f"configuration {wanted!r} asked for, but the descriptor has no DeploymentOptionSection")
        if wanted not in {c.id for c in configs}:
            raise OvfError(f"configuration {wanted!r} is not in DeploymentOptionSection ({[c.id for c in configs]})")
        return configs, wanted
    if not configs:
        return configs, ""
    defaults = [c for c in configs if c.default]
    if len(defaults) > 1:
        warnings.append(f"several configurations marked default ({[c.id for c in defaults]}): using the first")
    # DSP0243: without an ovf:default="true", the first Configuration is the default.
    return configs, (defaults or configs)[0].id


def _items_for(
    hw: ET.Element, ns: str, chosen: str, known: set[str], warnings: list[str]
) -> tuple[list[tuple[str, str, dict[str, str], dict[str, str]]], set[str]]:
    """Items of the chosen configuration, merged per InstanceID: (iid, tag, rasd fields, vmw extras).

    Also returns the disk ids any Item attaches in any configuration (a disk only another
    configuration uses is not an error)."""
    merged: dict[str, tuple[str, dict[str, str], dict[str, str]]] = {}
    attached: set[str] = set()
    for n, it in enumerate(hw):
        tag = _local(it.tag)
        if tag not in ("Item", "StorageItem", "EthernetPortItem"):
            continue
        fields: dict[str, str] = {}
        extras: dict[str, str] = {}
        for c in it:
            if not isinstance(c.tag, str):
                continue
            (extras if c.tag.startswith(f"{{{VMW_NS}}}") else fields)[_local(c.tag)] = (c.text or "").strip()
        if fields.get("ResourceType", "").strip() == str(RT_DISK):
            m = _HOST_RESOURCE.match(fields.get("HostResource", ""))
            if m and m.group(1) == "disk":
                attached.add(m.group(2))
        bound = (_attr(it, ns, "bound") or "normal").strip().lower()
        if bound in ("min", "max"):
            continue  # a range limit, not the value to deploy
        configs = (_attr(it, ns, "configuration") or "").split()
        unknown = [c for c in configs if c not in known]
        if unknown:
            warnings.append(f"{tag} InstanceID={fields.get('InstanceID', '?')}: ovf:configuration names {unknown}")
        if configs and chosen not in configs:
            continue
        iid = fields.get("InstanceID") or f"(item {n})"
        if iid in merged:
            # DSP0243: a later Item's child replaces the like-named child of an earlier one.
            merged[iid][1].update(fields)
            merged[iid][2].update(extras)
        else:
            merged[iid] = (tag, fields, extras)
    return [(iid, tag, f, e) for iid, (tag, f, e) in merged.items()], attached


def _vbox_firmware(vs: ET.Element) -> str:
    """Firmware from VirtualBox's own machine config (<vbox:Machine>/Hardware/Firmware/@type)."""
    for machine in vs:
        if machine.tag != f"{{{VBOX_NS}}}Machine":
            continue
        for el in machine.iter():
            if _local(el.tag) == "Firmware" and el.get("type"):
                kind = el.get("type", "").upper()
                # VirtualBox Settings.cpp: BIOS | EFI | EFI32 | EFI64 | EFIDUAL (and "1"/"2" on old trunks)
                return "efi" if kind.startswith("EFI") or kind == "2" else "bios"
    return ""


# ------------------------------------------------------------------------ choices for a target


def choose_system_type(types: list[str], target_family: str = "") -> str:
    """One hardware family out of a vssd:VirtualSystemType list.

    With a VMware target family (``vmx-N``), the newest listed ``vmx-M`` with M <= N; without one,
    the oldest listed vmx family (what the appliance needs at least); with no vmx family listed,
    the first type as written. A non-VMware type never becomes a vmx target's version."""
    vmx = sorted((int(m.group(1)), t) for t in types if (m := _VMX.match(t)))
    target = _VMX.match(target_family or "")
    if vmx:
        if target:
            fitting = [t for n, t in vmx if n <= int(target.group(1))]
            return fitting[-1] if fitting else vmx[0][1]
        return vmx[0][1]
    if target:
        return ""  # "virtualbox-2.2" etc. says nothing a vSphere target can use
    return types[0] if types else ""


def _nic_model(subtype: str) -> str:
    low = subtype.lower()
    return _NIC_ALIASES.get(low, low)


def choose_nic_model(nic: OvfNic, target: Platform | None = None) -> str:
    """NicSpec model for ``nic``: the first listed alternative the target has, else the first."""
    candidates = [_nic_model(s) for s in (nic.alternatives or [nic.model]) if s]
    if not candidates:
        return ""
    if target is not None and target.nic_models:
        for c in candidates:
            if c in target.nic_models:
                return c
    return candidates[0]


def scsi_model(subtype: str) -> str:
    """crossvisor SCSI controller name of an OVF ResourceSubType (lsilogicsas -> lsilogic-sas, ...)."""
    return _SCSI_FROM_OVF.get(subtype.lower(), subtype)


def choose_controller(disk: OvfDisk, target: Platform | None = None) -> str:
    """The disk's controller as "bus" or "bus:model", one model chosen among listed alternatives."""
    subs = disk.controller_alternatives or ([disk.controller_subtype] if disk.controller_subtype else [])
    if disk.controller != "scsi":
        return f"{disk.controller}:{subs[0]}" if subs else disk.controller
    models = [scsi_model(s) for s in subs]
    if not models:
        return "scsi"
    supported = _SCSI_BY_KIND.get(target.kind, ()) if target is not None else ()
    for m in models:
        if m in supported:
            return f"scsi:{m}"
    return f"scsi:{models[0]}"


# ------------------------------------------------------------------------ Hardware <-> descriptor

_QEMU_TO_OVF_FORMAT = {"vmdk": "vmdk-streamOptimized", "vpc": "vhd"}


def ovf_disk_format(fmt: str) -> str:
    """Accept an OVF disk format or a qemu-img format name (vmdk -> streamOptimized, vpc -> vhd)."""
    fmt = _QEMU_TO_OVF_FORMAT.get(fmt, fmt)
    if fmt not in DISK_FORMAT_URLS:
        raise OvfError(f"disk format {fmt!r} unknown (one of {DISK_FORMATS})")
    return fmt


def descriptor_from_hardware(name: str, hw: Hardware, disk_hrefs: list[str], disk_format: str) -> OvfDescriptor:
    """Describe ``hw`` for export; ``disk_hrefs[i]`` is the package file of ``hw.disks[i]``."""
    if len(disk_hrefs) != len(hw.disks):
        raise OvfError(f"{len(disk_hrefs)} disk hrefs for {len(hw.disks)} disks")
    fmt = ovf_disk_format(disk_format)
    subtypes: dict[str, str] = {}
    for ctrl in hw.controllers:  # "scsi:lsilogic" -> first subtype seen per bus wins
        bus, _, sub = ctrl.partition(":")
        subtypes.setdefault(bus, sub)
    disks = []
    for spec, href in zip(hw.disks, disk_hrefs, strict=True):
        bus, _, model = spec.bus.partition(":")  # a disk's own "scsi:pvscsi" beats the VM-wide list
        model = model or subtypes.get(bus, "")
        disks.append(
            OvfDisk(
                file_href=href,
                capacity_bytes=spec.capacity_bytes,
                format=fmt,
                controller=bus,
                # VMware's spellings on the wire (VirtualSCSI, lsilogicsas): what vCenter reads
                controller_subtype=_SCSI_TO_OVF.get(model, model) if bus == "scsi" else model,
            )
        )
    nics = [
        OvfNic(
            model=_NIC_SUBTYPE.get(n.model.lower(), n.model),
            network=n.network,
            mac=n.mac,
        )
        for n in hw.nics
    ]
    cdroms = [OvfCdrom(*c.split(":", 1)) if ":" in c else OvfCdrom(c or "ide") for c in hw.cdroms]
    return OvfDescriptor(
        name=name,
        cpus=hw.cpus,
        memory_mib=hw.memory_mib,
        disks=disks,
        nics=nics,
        firmware=hw.firmware,
        hardware_version=hw.hardware_version,
        metadata=dict(hw.metadata),
        configuration=hw.configuration,
        cores_per_socket=hw.cores_per_socket,
        os_id=hw.os_id,
        os_type=hw.os_type,
        extra_config=dict(hw.extra_config),
        cdroms=cdroms,
        serials=[OvfSerial(connection=s) for s in hw.serials],
        extra_files=[OvfFile(c.file_href) for c in cdroms if c.file_href],
    )


def hardware_from_descriptor(
    d: OvfDescriptor, disk_paths: list[str], disk_format: str, target: Platform | None = None
) -> Hardware:
    """Hardware an importer should create; ``disk_paths`` are the converted disks (qemu format).

    ``target`` decides among alternatives the package lists (hardware family, NIC and SCSI
    models); without it the first alternative (the oldest vmx family) is taken."""
    if len(disk_paths) != len(d.disks):
        raise OvfError(f"{len(disk_paths)} disk paths for {len(d.disks)} disks in {d.name!r}")
    types = d.system_types or ([d.hardware_version] if d.hardware_version else [])
    controllers = list(dict.fromkeys(choose_controller(x, target) for x in d.disks))
    return Hardware(
        cpus=d.cpus,
        memory_mib=d.memory_mib,
        disks=[
            DiskSpec(
                path=p,
                format=disk_format,
                bus=x.controller,
                capacity_bytes=x.capacity_bytes,
            )
            for x, p in zip(d.disks, disk_paths, strict=True)
        ],
        nics=[NicSpec(model=choose_nic_model(n, target), mac=n.mac, network=n.network) for n in d.nics],
        firmware=d.firmware,
        controllers=controllers,
        hardware_version=choose_system_type(types, target.hardware_version if target is not None else ""),
        metadata=dict(d.metadata),
        os_id=d.os_id,
        os_type=d.os_type,
        cores_per_socket=d.cores_per_socket,
        extra_config=dict(d.extra_config),
        cdroms=[f"{c.bus}:{c.file_href}" if c.file_href else c.bus for c in d.cdroms],
        serials=[s.connection for s in d.serials],
        configuration=d.configuration,
    )
