"""Build and parse OVF 1.x / 2.x descriptors (pure: strings in, strings out, no file I/O).

Only the single-VirtualSystem subset that hypervisor exports actually use is modelled: CPU,
memory, disk controllers, disks, NICs, firmware, hardware version and key/value metadata.
Parsing matches child elements by *local name* because OVF 2.0 moves storage and NIC items to
the sasd/epasd namespaces while VMware and VirtualBox keep rasd; attribute lookup prefers the
ovf: namespace and falls back to unqualified attributes (some producers omit the prefix).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from domain.vm import DiskSpec, Hardware, NicSpec

OVF1_NS = "http://schemas.dmtf.org/ovf/envelope/1"
OVF2_NS = "http://schemas.dmtf.org/ovf/envelope/2"
RASD_NS = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
VSSD_NS = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
SASD_NS = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_StorageAllocationSettingData.xsd"
EPASD_NS = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_EthernetPortAllocationSettingData.xsd"
VMW_NS = "http://www.vmware.com/schema/ovf"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
CIM_NS = "http://schemas.dmtf.org/wbem/wscim/1/common"

# CIM ResourceType values (DSP1041 / CIM_ResourceAllocationSettingData).
RT_CPU, RT_MEMORY, RT_IDE, RT_SCSI, RT_NIC, RT_DISK, RT_OTHER_STORAGE = (
    3,
    4,
    5,
    6,
    10,
    17,
    20,
)

# ovf:format URL per disk format. The first URL of each format is what build_ovf writes; the
# others are spellings seen in the wild (older VMware, VirtualBox) that parse_ovf accepts.
DISK_FORMAT_URLS: dict[str, tuple[str, ...]] = {
    "vmdk-streamOptimized": (
        "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized",
        "http://www.vmware.com/specifications/vmdk.html#streamOptimized",
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

# qemu-img format name of each OVF disk format (the convert stage works in qemu terms).
QEMU_FORMAT = {
    "vmdk-streamOptimized": "vmdk",
    "vmdk-monolithicSparse": "vmdk",
    "qcow2": "qcow2",
    "raw": "raw",
    "vhd": "vpc",
    "vhdx": "vhdx",
}

CONTROLLERS = ("scsi", "ide", "sata", "virtio")

# NIC model: DiskSpec/NicSpec lowercase name <-> OVF ResourceSubType as VMware/VirtualBox write it.
_NIC_SUBTYPE = {
    "vmxnet3": "VmxNet3",
    "e1000": "E1000",
    "e1000e": "E1000e",
    "virtio": "virtio",
    "rtl8139": "rtl8139",
    "netvsc": "netvsc",
    "pcnet32": "PCNet32",
}

METADATA_CLASS = "org.crossvisor"
ANNOTATION_KEY = "annotation"  # metadata key carried in AnnotationSection instead of a Property


class OvfError(ValueError):
    """Malformed or unsupported descriptor; the message names the element/attribute at fault."""


@dataclass
class OvfDisk:
    file_href: str  # "" for a blank disk without a backing file
    capacity_bytes: int
    format: str  # one of DISK_FORMATS
    controller: str = "scsi"  # scsi | ide | sata | virtio
    controller_subtype: str = ""  # e.g. lsilogic, pvscsi, VirtualSCSI, virtio-scsi
    populated_bytes: int = 0
    file_size: int = 0  # References/File ovf:size (bytes of the file as stored), 0 = unknown
    compression: str = ""  # References/File ovf:compression, e.g. "gzip"


@dataclass
class OvfNic:
    model: str  # ResourceSubType verbatim, e.g. VmxNet3, E1000, virtio
    network: str = "default"
    mac: str = ""  # rasd:Address (optional)


@dataclass
class OvfDescriptor:
    name: str
    cpus: int
    memory_mib: int
    disks: list[OvfDisk]
    nics: list[OvfNic]
    firmware: str = "bios"  # bios | efi
    hardware_version: str = ""  # vssd:VirtualSystemType, e.g. "vmx-13"
    metadata: dict[str, str] = field(default_factory=dict)
    ovf_version: str = "1.0"  # "1.0" | "2.0"


# ---------------------------------------------------------------------------------------- build


def build_ovf(d: OvfDescriptor) -> str:
    """Serialise ``d`` as an OVF envelope (1.0 uses rasd Items; 2.0 uses StorageItem/EthernetPortItem)."""
    _validate(d)
    ns = OVF2_NS if d.ovf_version.startswith("2") else OVF1_NS
    for prefix, uri in (
        ("ovf", ns),
        ("rasd", RASD_NS),
        ("vssd", VSSD_NS),
        ("sasd", SASD_NS),
        ("epasd", EPASD_NS),
        ("vmw", VMW_NS),
        ("xsi", XSI_NS),
    ):
        ET.register_namespace(prefix, uri)

    def o(tag: str) -> str:
        return f"{{{ns}}}{tag}"

    env = ET.Element(o("Envelope"), {o("version"): d.ovf_version})
    refs = ET.SubElement(env, o("References"))
    file_ids: list[str] = []
    for i, disk in enumerate(d.disks, 1):
        if not disk.file_href:
            file_ids.append("")
            continue
        attrs = {o("href"): disk.file_href, o("id"): f"file{i}"}
        if disk.file_size:
            attrs[o("size")] = str(disk.file_size)
        if disk.compression:
            attrs[o("compression")] = disk.compression
        ET.SubElement(refs, o("File"), attrs)
        file_ids.append(f"file{i}")

    disk_sec = ET.SubElement(env, o("DiskSection"))
    ET.SubElement(disk_sec, o("Info")).text = "Virtual disk information"
    for i, disk in enumerate(d.disks, 1):
        attrs = {
            o("capacity"): str(disk.capacity_bytes),
            o("capacityAllocationUnits"): "byte",
            o("diskId"): f"vmdisk{i}",
            o("format"): DISK_FORMAT_URLS[disk.format][0],
        }
        if file_ids[i - 1]:
            attrs[o("fileRef")] = file_ids[i - 1]
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

    vs = ET.SubElement(env, o("VirtualSystem"), {o("id"): d.name})
    ET.SubElement(vs, o("Info")).text = "A virtual machine"
    ET.SubElement(vs, o("Name")).text = d.name
    meta = dict(d.metadata)
    if ANNOTATION_KEY in meta:
        ann = ET.SubElement(vs, o("AnnotationSection"))
        ET.SubElement(ann, o("Info")).text = "A human-readable annotation"
        ET.SubElement(ann, o("Annotation")).text = meta.pop(ANNOTATION_KEY)
    if meta:
        prod = ET.SubElement(vs, o("ProductSection"), {o("class"): METADATA_CLASS})
        ET.SubElement(prod, o("Info")).text = "crossvisor metadata"
        for key, value in meta.items():
            ET.SubElement(
                prod,
                o("Property"),
                {o("key"): key, o("type"): "string", o("value"): value},
            )

    hw = ET.SubElement(vs, o("VirtualHardwareSection"))
    ET.SubElement(hw, o("Info")).text = "Virtual hardware requirements"
    system = ET.SubElement(hw, o("System"))
    ET.SubElement(system, f"{{{VSSD_NS}}}ElementName").text = "Virtual Hardware Family"
    ET.SubElement(system, f"{{{VSSD_NS}}}InstanceID").text = "0"
    ET.SubElement(system, f"{{{VSSD_NS}}}VirtualSystemIdentifier").text = d.name
    if d.hardware_version:
        ET.SubElement(system, f"{{{VSSD_NS}}}VirtualSystemType").text = d.hardware_version

    v2 = ns == OVF2_NS
    ids = iter(range(1, 10_000))

    def item(kind: str, fields: list[tuple[str, str]]) -> None:
        # OVF 2.0 puts storage and NICs in their own element/namespace; 1.0 uses rasd Items.
        tag, fns = "Item", RASD_NS
        if v2 and kind == "storage":
            tag, fns = "StorageItem", SASD_NS
        elif v2 and kind == "nic":
            tag, fns = "EthernetPortItem", EPASD_NS
        el = ET.SubElement(hw, o(tag))
        # CIM schemas require alphabetical element order inside an Item.
        for k, v in sorted(fields):
            ET.SubElement(el, f"{{{fns}}}{k}").text = v

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
    for disk in d.disks:
        key = (disk.controller, disk.controller_subtype)
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
    for i, disk in enumerate(d.disks, 1):
        parent = ctrl_ids[(disk.controller, disk.controller_subtype)]
        unit = per_ctrl.get(parent, 0)
        per_ctrl[parent] = unit + 1
        item(
            "storage",
            [
                ("AddressOnParent", str(unit)),
                ("ElementName", f"Hard disk {i}"),
                ("HostResource", f"ovf:/disk/vmdisk{i}"),
                ("InstanceID", str(next(ids))),
                ("Parent", parent),
                ("ResourceType", str(RT_DISK)),
            ],
        )
    for i, nic in enumerate(d.nics, 1):
        fields = [
            ("AutomaticAllocation", "true"),
            ("Connection", nic.network),
            ("ElementName", f"Network adapter {i}"),
            ("InstanceID", str(next(ids))),
            ("ResourceSubType", nic.model),
            ("ResourceType", str(RT_NIC)),
        ]
        if nic.mac:
            fields.append(("Address", nic.mac))
        item("nic", fields)
    if d.firmware != "bios":
        # VMware's own spelling: ovftool and vCenter read firmware from this vmw:Config key.
        ET.SubElement(
            hw,
            f"{{{VMW_NS}}}Config",
            {
                o("required"): "false",
                f"{{{VMW_NS}}}key": "firmware",
                f"{{{VMW_NS}}}value": d.firmware,
            },
        )
    ET.indent(env, space="  ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(env, encoding="unicode") + "\n"


def _validate(d: OvfDescriptor) -> None:
    if d.ovf_version not in ("1.0", "1.1", "2.0"):
        raise OvfError(f"ovf_version {d.ovf_version!r} unsupported (1.0, 1.1 or 2.0)")
    if not d.name:
        raise OvfError("VirtualSystem ovf:id: name is empty")
    if d.cpus < 1 or d.memory_mib < 1:
        raise OvfError(f"cpus={d.cpus} memory_mib={d.memory_mib}: both must be >= 1")
    for disk in d.disks:
        if disk.format not in DISK_FORMAT_URLS:
            raise OvfError(f"Disk ovf:format {disk.format!r} unknown (one of {DISK_FORMATS})")
        if disk.controller not in CONTROLLERS:
            raise OvfError(f"disk controller {disk.controller!r} unknown (one of {CONTROLLERS})")
        if disk.capacity_bytes <= 0:
            raise OvfError(f"Disk {disk.file_href!r} ovf:capacity must be > 0")
    hrefs = [x.file_href for x in d.disks if x.file_href]
    if len(hrefs) != len(set(hrefs)):
        raise OvfError(f"References/File ovf:href duplicated: {hrefs}")


def _controller_rasd(controller: str, subtype: str) -> tuple[int, str]:
    if controller == "scsi":
        return RT_SCSI, subtype
    if controller == "ide":
        return RT_IDE, subtype
    if controller == "virtio":
        return (
            RT_OTHER_STORAGE,
            subtype or "virtio",
        )  # marks virtio-blk among type-20 controllers
    return RT_OTHER_STORAGE, subtype  # sata: VMware writes vmware.sata.ahci


def _controller_from_rasd(rtype: int, subtype: str) -> tuple[str, str]:
    if rtype == RT_SCSI:
        return "scsi", subtype
    if rtype == RT_IDE:
        return "ide", subtype
    if subtype.lower().startswith("virtio"):
        return "virtio", "" if subtype.lower() == "virtio" else subtype
    return "sata", subtype


# ---------------------------------------------------------------------------------------- parse


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(el: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in el if _local(c.tag) == name]


def _child(el: ET.Element, name: str) -> ET.Element | None:
    found = _children(el, name)
    return found[0] if found else None


def _attr(el: ET.Element, ns: str, name: str) -> str | None:
    value = el.get(f"{{{ns}}}{name}")
    return el.get(name) if value is None else value


def _int(text: str | None, where: str) -> int:
    try:
        return int((text or "").strip())
    except ValueError:
        raise OvfError(f"{where}: {text!r} is not an integer") from None


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
        return int(base) ** int(exp) if exp else int(base)
    if units.strip().lower() in _UNIT_WORDS:
        return _UNIT_WORDS[units.strip().lower()]
    raise OvfError(f"{where}: unsupported allocation units {units!r}")


def parse_ovf(xml_text: str) -> OvfDescriptor:
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        raise OvfError(f"descriptor is not well-formed XML: {exc}") from None
    if _local(root.tag) != "Envelope":
        raise OvfError(f"root element is <{_local(root.tag)}>, expected <Envelope>")
    ns = root.tag[1:].split("}")[0] if root.tag.startswith("{") else ""
    if ns not in (OVF1_NS, OVF2_NS):
        raise OvfError(f"Envelope namespace {ns!r} is neither OVF 1.x ({OVF1_NS}) nor 2.x")
    version = "2.0" if ns == OVF2_NS else (_attr(root, ns, "version") or "1.0")

    # References: file id -> (href, size, compression)
    files: dict[str, tuple[str, int, str]] = {}
    refs = _child(root, "References")
    for f in _children(refs, "File") if refs is not None else []:
        fid, href = _attr(f, ns, "id"), _attr(f, ns, "href")
        if not fid:
            raise OvfError("References/File: missing ovf:id")
        if not href:
            raise OvfError(f"References/File {fid!r}: missing ovf:href")
        size = _attr(f, ns, "size")
        files[fid] = (
            href,
            _int(size, f"References/File {fid!r} ovf:size") if size else 0,
            _attr(f, ns, "compression") or "",
        )

    # DiskSection: disk id -> OvfDisk (controller filled in from the hardware section)
    disks: dict[str, OvfDisk] = {}
    disk_sec = _child(root, "DiskSection")
    for el in _children(disk_sec, "Disk") if disk_sec is not None else []:
        did = _attr(el, ns, "diskId")
        if not did:
            raise OvfError("DiskSection/Disk: missing ovf:diskId")
        where = f"DiskSection/Disk {did!r}"
        cap = _attr(el, ns, "capacity")
        if cap is None:
            raise OvfError(f"{where}: missing ovf:capacity")
        if cap.strip().startswith("${"):
            raise OvfError(f"{where}: ovf:capacity {cap!r} uses a property reference (unsupported)")
        units = _attr(el, ns, "capacityAllocationUnits") or "byte"
        capacity = _int(cap, f"{where} ovf:capacity") * _unit_multiplier(units, f"{where} ovf:capacityAllocationUnits")
        fmt_url = _attr(el, ns, "format") or ""
        fmt = _URL_TO_FORMAT.get(fmt_url.lower())
        if fmt is None:
            raise OvfError(f"{where}: unknown ovf:format {fmt_url!r}")
        href, fsize, compression = "", 0, ""
        ref = _attr(el, ns, "fileRef")
        if ref:
            if ref not in files:
                raise OvfError(f"{where}: ovf:fileRef {ref!r} matches no References/File ovf:id")
            href, fsize, compression = files[ref]
        pop = _attr(el, ns, "populatedSize")
        disks[did] = OvfDisk(
            file_href=href,
            capacity_bytes=capacity,
            format=fmt,
            populated_bytes=_int(pop, f"{where} ovf:populatedSize") if pop else 0,
            file_size=fsize,
            compression=compression,
        )

    if _child(root, "VirtualSystemCollection") is not None:
        raise OvfError("VirtualSystemCollection (multi-VM vApp) is not supported")
    vs = _child(root, "VirtualSystem")
    if vs is None:
        raise OvfError("Envelope has no VirtualSystem element")
    name_el = _child(vs, "Name")
    name = (name_el.text or "").strip() if name_el is not None else ""
    name = name or (_attr(vs, ns, "id") or "")
    if not name:
        raise OvfError("VirtualSystem: neither Name nor ovf:id is set")

    metadata: dict[str, str] = {}
    ann_sec = _child(vs, "AnnotationSection")
    if ann_sec is not None:
        ann = _child(ann_sec, "Annotation")
        if ann is not None and ann.text:
            metadata[ANNOTATION_KEY] = ann.text
    for prod in _children(vs, "ProductSection"):
        cls = _attr(prod, ns, "class") or ""
        # Properties of foreign ProductSections keep their class so keys cannot collide.
        prefix = "" if cls in ("", METADATA_CLASS) else f"{cls}."
        for prop in _children(prod, "Property"):
            key = _attr(prop, ns, "key")
            if not key:
                raise OvfError(f"ProductSection {cls!r}/Property: missing ovf:key")
            metadata[prefix + key] = _attr(prop, ns, "value") or ""

    hw_secs = _children(vs, "VirtualHardwareSection")
    if not hw_secs:
        raise OvfError(f"VirtualSystem {name!r} has no VirtualHardwareSection")
    hw = hw_secs[0]  # several sections = alternatives per platform; the first is the default
    hardware_version = ""
    system = _child(hw, "System")
    if system is not None:
        vst = _child(system, "VirtualSystemType")
        hardware_version = (vst.text or "").strip() if vst is not None else ""

    cpus = memory_mib = 0
    controllers: dict[str, tuple[str, str]] = {}
    disk_items: list[tuple[str, str, str]] = []  # (instance id, host resource, parent)
    nics: list[OvfNic] = []
    for it in hw:
        tag = _local(it.tag)
        if tag not in ("Item", "StorageItem", "EthernetPortItem"):
            continue
        fields = {_local(c.tag): (c.text or "").strip() for c in it}
        iid = fields.get("InstanceID", "?")
        where = f"VirtualHardwareSection/{tag} InstanceID={iid}"
        if "ResourceType" not in fields:
            raise OvfError(f"{where}: missing ResourceType")
        rtype = _int(fields["ResourceType"], f"{where} ResourceType")
        if rtype == RT_CPU:
            cpus = _int(fields.get("VirtualQuantity"), f"{where} (CPU) VirtualQuantity")
        elif rtype == RT_MEMORY:
            qty = _int(fields.get("VirtualQuantity"), f"{where} (memory) VirtualQuantity")
            nbytes = qty * _unit_multiplier(
                fields.get("AllocationUnits") or "byte * 2^20",
                f"{where} (memory) AllocationUnits",
            )
            if nbytes % 2**20:
                raise OvfError(f"{where} (memory): {nbytes} bytes is not a whole number of MiB")
            memory_mib = nbytes // 2**20
        elif rtype in (RT_IDE, RT_SCSI, RT_OTHER_STORAGE):
            controllers[iid] = _controller_from_rasd(rtype, fields.get("ResourceSubType", ""))
        elif rtype == RT_DISK:
            host = fields.get("HostResource", "")
            if not host:
                raise OvfError(f"{where} (disk): missing HostResource")
            disk_items.append((iid, host, fields.get("Parent", "")))
        elif rtype == RT_NIC:
            nics.append(
                OvfNic(
                    model=fields.get("ResourceSubType", ""),
                    network=fields.get("Connection", "") or "default",
                    mac=fields.get("Address", ""),
                )
            )
    if cpus < 1:
        raise OvfError("VirtualHardwareSection: no CPU Item (ResourceType 3) with VirtualQuantity >= 1")
    if memory_mib < 1:
        raise OvfError("VirtualHardwareSection: no memory Item (ResourceType 4) with VirtualQuantity >= 1")

    ordered: list[OvfDisk] = []
    used: set[str] = set()
    for iid, host, parent in disk_items:
        where = f"VirtualHardwareSection/Item InstanceID={iid} (disk)"
        m = re.fullmatch(r"ovf:/+disk/(.+)", host)
        if not m:
            raise OvfError(f"{where}: HostResource {host!r} is not ovf:/disk/<diskId>")
        did = m.group(1)
        if did not in disks:
            raise OvfError(f"{where}: HostResource {host!r} matches no DiskSection/Disk ovf:diskId")
        if did in used:
            raise OvfError(f"{where}: DiskSection/Disk {did!r} attached twice")
        if parent not in controllers:
            raise OvfError(f"{where}: Parent {parent!r} matches no controller Item InstanceID")
        used.add(did)
        disk = disks[did]
        disk.controller, disk.controller_subtype = controllers[parent]
        ordered.append(disk)
    for did in disks:
        if did not in used:
            raise OvfError(f"DiskSection/Disk {did!r} is not attached by any disk Item (ResourceType 17)")

    firmware = "bios"
    for el in hw.iter():
        if _local(el.tag) == "Config" and _attr(el, VMW_NS, "key") == "firmware":
            firmware = (_attr(el, VMW_NS, "value") or "bios").lower()

    return OvfDescriptor(
        name=name,
        cpus=cpus,
        memory_mib=memory_mib,
        disks=ordered,
        nics=nics,
        firmware=firmware,
        hardware_version=hardware_version,
        metadata=metadata,
        ovf_version=version,
    )


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
        disks.append(
            OvfDisk(
                file_href=href,
                capacity_bytes=spec.capacity_bytes,
                format=fmt,
                controller=bus,
                controller_subtype=model or subtypes.get(bus, ""),
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
    return OvfDescriptor(
        name=name,
        cpus=hw.cpus,
        memory_mib=hw.memory_mib,
        disks=disks,
        nics=nics,
        firmware=hw.firmware,
        hardware_version=hw.hardware_version,
        metadata=dict(hw.metadata),
    )


def hardware_from_descriptor(d: OvfDescriptor, disk_paths: list[str], disk_format: str) -> Hardware:
    """Hardware an importer should create; ``disk_paths`` are the converted disks (qemu format)."""
    if len(disk_paths) != len(d.disks):
        raise OvfError(f"{len(disk_paths)} disk paths for {len(d.disks)} disks in {d.name!r}")
    to_model = {v.lower(): k for k, v in _NIC_SUBTYPE.items()}
    controllers = list(
        dict.fromkeys(
            f"{x.controller}:{x.controller_subtype}" if x.controller_subtype else x.controller for x in d.disks
        )
    )
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
        nics=[
            NicSpec(
                model=to_model.get(n.model.lower(), n.model.lower()),
                mac=n.mac,
                network=n.network,
            )
            for n in d.nics
        ],
        firmware=d.firmware,
        controllers=controllers,
        hardware_version=d.hardware_version,
        metadata=dict(d.metadata),
    )
