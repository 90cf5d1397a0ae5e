"""A libvirt host's storage as crossvisor uses it: one pool, content volumes, streams.

Everything goes through libvirt's storage API, so it works the same for this machine's libvirtd
and one across the network, whose files the worker never sees:

* a disk given as a file on the worker reaches the host layer by layer: each layer of its qcow2
  backing chain becomes a *content volume* named by its SHA-256 (and the volume below it; its
  backing reference re-pointed at the host's copy of that volume), uploaded once per host and never
  written again; a VM gets a fresh qcow2 overlay volume of its own on top;
* an upload counts only once its ``<name>.ok`` volume holds its key: a worker killed mid-upload
  leaves a volume that stops growing, which the next attempt removes; the bytes are hashed as they
  stream and must match the file's recorded hash;
* a VM's disk comes back flattened: ``virStorageVolCreateXMLFrom`` (qemu-img on the host, reading
  through the backing chain) into a temporary volume, then a download stream.

Pools must be file based (dir, fs, netfs, logical): backing references are host paths.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from xml.sax.saxutils import escape

import libvirt
import structlog

from crossvisor.core import steps
from crossvisor.core.config import vm_name_prefix
from domain.vm import DiskSpec
from drivers.base import InfraFault
from toolbox import diskconv, filehash

DEFAULT_POOL = "crossvisor"
DEFAULT_POOL_PATH = "/var/lib/libvirt/crossvisor"
CHUNK = 4 << 20  # file reads (and hashing) go in pieces this large
SEND_MAX = 256 << 10  # libvirt's stream messages carry at most this much (VIR_NET_MESSAGE_LEGACY_PAYLOAD_MAX)
YARDSTICK_MIN_BYTES = 64 << 20  # uploads this large are timed against a local copy of the file
OVERLAY_TRIES = 20  # a concurrent attempt's overlay upload is waited for this many times 0.5 s
STALE_UPLOAD_S = 60.0  # a half-uploaded volume that stopped growing this long was left by a dead worker
EXT = {"vpc": "vhd"}


def _err(op: str, e: libvirt.libvirtError) -> InfraFault:
    return InfraFault(f"libvirt {op}: {e.get_error_message()}")


def _log():
    return structlog.get_logger("crossvisor")


def _qemu_img(*args: str) -> str:
    cmd = [diskconv.QEMU_IMG, *args]
    try:
        p = steps.run(cmd, timeout=600)
    except FileNotFoundError:
        raise diskconv.ConversionError(f"{cmd[0]} not installed (apt-get install qemu-utils)") from None
    if p.returncode != 0:
        raise diskconv.ConversionError(f"{' '.join(cmd)}: exit {p.returncode}: {p.stderr.strip()[-1500:]}")
    return p.stdout


def backing_chain(path: Path, fmt: str) -> list[tuple[Path, str, int]]:
    """The image and the files it is layered on, top first: (path, format, virtual size). Every
    backing format must be recorded in its overlay (diskconv always writes it): no probing."""
    out = json.loads(_qemu_img("info", "-f", fmt, "--backing-chain", "--output=json", str(path)))
    chain = []
    for i, layer in enumerate(out):
        if i and not layer.get("format"):
            raise InfraFault(f"{path}: backing file {layer.get('filename')} has no recorded format")
        chain.append((Path(layer["filename"]), layer["format"], int(layer["virtual-size"])))
    return chain


class HostStorage:
    """The pool ``pool_name`` on the host behind ``conn`` (a dir pool at ``pool_path`` is defined
    there when the host has no such pool)."""

    def __init__(self, conn: libvirt.virConnect, host: str, pool_name: str, pool_path: str, state_dir: Path):
        self.conn = conn
        self.host = host
        self.pool_name = pool_name or DEFAULT_POOL
        self.pool_path = pool_path or DEFAULT_POOL_PATH
        self.state_dir = Path(state_dir)
        self._pool_obj: libvirt.virStoragePool | None = None
        for d in (self.state_dir / "staging", self.state_dir / "hashes"):
            d.mkdir(parents=True, exist_ok=True)

    def pool(self) -> libvirt.virStoragePool:
        if self._pool_obj is not None:
            return self._pool_obj
        try:
            pool = self.conn.storagePoolLookupByName(self.pool_name)
        except libvirt.libvirtError as e:
            if e.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
                raise _err("pool lookup", e) from None
            pool = self._define_pool()
        if not pool.isActive():
            try:
                pool.create(0)
            except libvirt.libvirtError as e:
                if not pool.isActive():
                    raise _err(f"start pool {self.pool_name}", e) from None
        self._pool_obj = pool
        return pool

    def _define_pool(self) -> libvirt.virStoragePool:
        """A dir pool at ``pool_path`` on the host (made by the host's libvirtd, not by us)."""
        xml = (
            f"<pool type='dir'><name>{escape(self.pool_name)}</name>"
            f"<target><path>{escape(self.pool_path)}</path></target></pool>"
        )
        try:
            pool = self.conn.storagePoolDefineXML(xml, 0)
        except libvirt.libvirtError:
            try:  # defined meanwhile by a concurrent activity
                return self.conn.storagePoolLookupByName(self.pool_name)
            except libvirt.libvirtError as e:
                raise _err(f"define pool {self.pool_name} at {self.pool_path}", e) from None
        try:
            pool.build(libvirt.VIR_STORAGE_POOL_BUILD_NO_OVERWRITE)
        except libvirt.libvirtError:
            pass  # the directory exists already
        try:
            pool.setAutostart(1)
        except libvirt.libvirtError:
            pass
        _log().info("libvirt.pool_defined", host=self.host, pool=self.pool_name, path=self.pool_path)
        return pool

    def vol(self, name: str) -> libvirt.virStorageVol | None:
        try:
            return self.pool().storageVolLookupByName(name)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                return None
            raise _err(f"volume lookup {name}", e) from None

    def delete(self, name: str) -> None:
        vol = self.vol(name)
        if vol is not None:
            try:
                vol.delete(0)
            except libvirt.libvirtError as e:
                if self.vol(name) is not None:
                    raise _err(f"delete volume {name}", e) from None

    def sha256(self, path: Path) -> str:
        """SHA-256 of a local file, remembered per (path, size, mtime): images and conversions are
        immutable, and hashing a large one twice would cost seconds per stage."""
        got = filehash.known(path)  # this worker hashed this version already (a commit, an upload)
        if got:
            return got
        st = path.stat()
        memo = self.state_dir / "hashes" / (hashlib.sha1(str(path.resolve()).encode()).hexdigest() + ".json")
        try:
            m = json.loads(memo.read_text())
            if m["size"] == st.st_size and m["mtime_ns"] == st.st_mtime_ns:
                filehash.remember(path, m["sha256"], st)
                return m["sha256"]
        except (OSError, ValueError, KeyError):
            pass
        h = hashlib.sha256()
        with steps.step("hash", nbytes=st.st_size), open(path, "rb") as f:
            while b := f.read(CHUNK):
                h.update(b)
        tmp = memo.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": h.hexdigest()}))
        tmp.replace(memo)
        filehash.remember(path, h.hexdigest(), st)
        return h.hexdigest()

    def upload(self, name: str, src: Path, expect_sha: str = "") -> str:
        """Create volume ``name`` holding exactly the bytes of ``src`` (streamed in chunks) and
        return their SHA-256; with ``expect_sha`` a different hash deletes the volume and fails."""
        size = src.stat().st_size
        with steps.step("upload", nbytes=size):
            sha = self._upload(name, src, size, expect_sha)
        # a sparse disk crosses as its data only: a copy of the whole file is no yardstick for it
        if size >= YARDSTICK_MIN_BYTES and not _is_sparse(src) and _new_largest(self.host, size):
            self._local_copy_yardstick(src, size)
        return sha

    def _local_copy_yardstick(self, src: Path, size: int) -> None:
        """Time a local copy of the file just uploaded: how fast the same bytes move without the
        host in between, recorded beside the upload's rate. Only for the largest upload so far
        (``_new_largest``): a demo timed ten copies, 23 s of disk writes beside its guests, where
        the benchmark reads one (the largest upload's)."""
        dest = self.state_dir / "staging" / f"yardstick.{os.getpid()}.{threading.get_ident()}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            with steps.step("yardstick copy"):
                t0 = time.monotonic()
                shutil.copyfile(src, dest)
                steps.add_yardstick("upload", size, time.monotonic() - t0)
        finally:
            dest.unlink(missing_ok=True)

    def _upload(self, name: str, src: Path, size: int, expect_sha: str) -> str:
        # declared raw with the file's length: libvirt makes an empty file of that size and the
        # upload overwrites all of it; the pool then reports the real format (qcow2, vmdk...)
        xml = (
            f"<volume><name>{escape(name)}</name><capacity unit='bytes'>{size}</capacity>"
            "<allocation unit='bytes'>0</allocation><target><format type='raw'/></target></volume>"
        )
        vol = self.pool().createXML(xml, 0)
        stream = self.conn.newStream(0)
        h = hashlib.sha256()
        before = src.stat()
        try:
            if _is_sparse(src):
                # a raw disk is mostly holes: only its data crosses the connection, and the host's
                # copy stays as sparse as the worker's (the holes are hashed as the zeros they read as)
                vol.upload(stream, 0, size, libvirt.VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM)
                with open(src, "rb") as f:
                    stream.sparseSendAll(*_sparse_reader(f, h))
            else:
                vol.upload(stream, 0, size, 0)
                with open(src, "rb") as f:
                    while b := f.read(CHUNK):
                        h.update(b)
                        _send_all(stream, b)
            stream.finish()
        except BaseException:
            _abort(stream)
            self.delete(name)
            raise
        if expect_sha and h.hexdigest() != expect_sha:
            self.delete(name)
            raise InfraFault(f"{src} changed while it was uploaded to {self.host} ({h.hexdigest()} != {expect_sha})")
        filehash.remember(src, h.hexdigest(), before)
        return h.hexdigest()

    def download(self, vol: libvirt.virStorageVol, dest: Path, offset: int = 0, length: int = 0) -> int:
        """Stream a volume's bytes (or ``length`` bytes at ``offset``) into ``dest`` (atomically)."""
        with steps.step("download") as _:
            n = self._download(vol, dest, offset, length)
            steps.add_bytes(n)
        return n

    def _download(self, vol: libvirt.virStorageVol, dest: Path, offset: int, length: int) -> int:
        tmp = dest.with_name(f".{dest.name}.part")
        stream = self.conn.newStream(0)
        n = 0
        try:
            vol.download(stream, offset, length, 0)
            with open(tmp, "wb") as f:
                while True:
                    data = stream.recv(CHUNK)
                    if data == -2:
                        time.sleep(0.01)
                        continue
                    if not data:
                        break
                    f.write(data)
                    n += len(data)
                f.flush()
                os.fsync(f.fileno())
            stream.finish()
        except BaseException:
            _abort(stream)
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(dest)
        return n

    def read_small(self, vol: libvirt.virStorageVol) -> str:
        tmp = self.state_dir / "staging" / f"{vol.name()}.{threading.get_ident()}"
        try:
            self.download(vol, tmp)
            return tmp.read_text(errors="replace").strip()
        finally:
            tmp.unlink(missing_ok=True)

    def complete(self, name: str, key: str) -> libvirt.virStorageVol | None:
        """Content volume ``name`` if its upload finished (its ``.ok`` volume says ``key``), after
        waiting out a concurrent upload; a dead upload's leftovers are removed (None then)."""
        grew_at, last = time.monotonic(), -1
        while True:
            vol = self.vol(name)
            if vol is None:
                return None
            ok = self.vol(f"{name}.ok")
            if ok is not None and self.read_small(ok) == key:
                return vol
            try:
                alloc = vol.info()[2]
            except libvirt.libvirtError:
                alloc = last
            now = time.monotonic()
            if alloc != last:
                grew_at, last = now, alloc
            elif now - grew_at > STALE_UPLOAD_S:
                _log().warning("libvirt.stale_upload_removed", host=self.host, volume=name)
                self.delete(f"{name}.ok")
                self.delete(name)
                return None
            time.sleep(1.0)

    def content_volume(
        self, path: Path, fmt: str, below: libvirt.virStorageVol | None, below_fmt: str
    ) -> libvirt.virStorageVol:
        """The host's copy of one image layer, uploaded once per host: named by the layer's hash
        (and the volume it is layered on), never written after its upload."""
        sha = self.sha256(path)
        key = sha if below is None else hashlib.sha256(f"{sha}:{below.name()}".encode()).hexdigest()
        name = f"{vm_name_prefix()}-base-{key[:32]}.{EXT.get(fmt, fmt)}"
        for _ in range(3):
            with steps.step("wait for upload"):
                vol = self.complete(name, key)
            if vol is not None:
                return vol
            src, staged = path, None
            if below is not None:
                # the layer's header names a worker path: point a copy at the host's volume
                staged = self.state_dir / "staging" / f"{name}.{os.getpid()}.{threading.get_ident()}"
                shutil.copyfile(path, staged)
                _qemu_img("rebase", "-u", "-f", fmt, "-b", below.path(), "-F", below_fmt, str(staged))
                src = staged
            try:
                self.upload(name, src, "" if staged else sha)
            except libvirt.libvirtError as e:
                if e.get_error_code() == libvirt.VIR_ERR_STORAGE_VOL_EXIST:
                    continue  # another activity is uploading it: wait for that one
                raise _err(f"upload {name} to {self.host}", e) from None
            finally:
                if staged is not None:
                    staged.unlink(missing_ok=True)
            marker = self.state_dir / "staging" / f"{name}.ok.{os.getpid()}.{threading.get_ident()}"
            marker.write_text(key + "\n")
            try:
                self.delete(f"{name}.ok")
                self.upload(f"{name}.ok", marker)
            finally:
                marker.unlink(missing_ok=True)
            _log().info("libvirt.volume_uploaded", host=self.host, volume=name, bytes=path.stat().st_size)
        vol = self.vol(name)
        if vol is None:
            raise InfraFault(f"content volume {name} could not be placed on {self.host}")
        return vol

    def place(self, vm: str, index: int, d: DiskSpec) -> str:
        """Put a local disk on the host: its layers as content volumes, a fresh overlay volume for
        the VM on top. Returns the overlay volume's name."""
        src = Path(d.path)
        if not src.is_file():
            raise InfraFault(f"disk {d.path} of {vm} is not a file on this worker")
        chain = backing_chain(src, d.format)
        below, below_fmt = None, ""
        for path, fmt, _size in reversed(chain):
            below, below_fmt = self.content_volume(path, fmt, below, below_fmt), fmt
        return self.overlay(vm, index, below.path(), below_fmt, chain[0][2])

    def overlay(self, vm: str, index: int, below: str, below_fmt: str, size: int) -> str:
        """A fresh qcow2 overlay volume for disk ``index`` of ``vm`` on the host's file ``below``
        (a content volume, or a template VM's disk: only read through the overlay, never written).
        Returns the overlay volume's name."""
        name = f"{vm}-disk{index}.qcow2"
        overlay = self.state_dir / "staging" / f"{name}.{os.getpid()}.{threading.get_ident()}"
        overlay.parent.mkdir(parents=True, exist_ok=True)
        try:
            # -u: the backing file is the host's, unreadable here; the size comes from the caller
            _qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", below, "-F", below_fmt, str(overlay), str(size))
            for tries_left in range(OVERLAY_TRIES - 1, -1, -1):
                # an earlier attempt's overlay (killed, or still uploading beside this one after a
                # server restart): replaced, a fresh overlay on the same layers is the same disk;
                # one being written right now is waited for
                try:
                    self.delete(name)
                    self.upload(name, overlay)
                    break
                except (libvirt.libvirtError, InfraFault) as e:
                    busy = (
                        e.get_error_code()
                        in (
                            libvirt.VIR_ERR_STORAGE_VOL_EXIST,  # the other attempt created it meanwhile
                            libvirt.VIR_ERR_OPERATION_INVALID,  # ...is writing it
                            libvirt.VIR_ERR_NO_STORAGE_VOL,  # ...deleted the one this attempt writes
                        )
                        if isinstance(e, libvirt.libvirtError)
                        else "still in use" in str(e) or "being allocated" in str(e)
                    )
                    if not busy or not tries_left:
                        raise
                    time.sleep(0.5)
        except libvirt.libvirtError as e:
            raise _err(f"upload {name} to {self.host}", e) from None
        finally:
            overlay.unlink(missing_ok=True)
        return name

    def flatten(self, vol: libvirt.virStorageVol, name: str, fmt: str) -> libvirt.virStorageVol:
        """A new volume ``name`` holding ``vol``'s disk as one image in ``fmt`` (qemu-img on the
        host reads through its backing chain). The caller deletes it."""
        self.delete(name)
        xml = (
            f"<volume><name>{escape(name)}</name><capacity unit='bytes'>{vol.info()[1]}</capacity>"
            f"<target><format type='{fmt}'/></target></volume>"
        )
        try:
            with steps.step("flatten"):
                return self.pool().createXMLFrom(xml, vol, 0)
        except libvirt.libvirtError as e:
            raise _err(f"flatten {vol.name()} on {self.host}", e) from None

    def remove_prefixed(self, prefixes: tuple[str, ...], keep=None) -> list[str]:
        """Delete every volume of the pool whose name starts with one of ``prefixes`` (except those
        ``keep(name)`` holds on to); returns their names."""
        try:
            names = [v.name() for v in self.pool().listAllVolumes(0)]
        except libvirt.libvirtError as e:
            raise _err(f"list volumes of {self.pool_name}", e) from None
        gone = []
        for vol in names:
            if vol.startswith(prefixes) and not (keep and keep(vol)):
                self.delete(vol)
                gone.append(vol)
        return gone

    def prune_content(self, keep_bytes: int, min_age_s: float = 3600.0) -> list[str]:
        """Delete content volumes (image layers uploaded once per host, shared by every VM on it)
        that no VM defined on the host stands on, oldest first, until those left hold at most
        ``keep_bytes``; one uploaded less than ``min_age_s`` ago is kept (a cell may be about to
        define the VM on it). Without this a host's pool only grows: every move's converted disk
        is a new layer. Returns the names deleted."""
        prefix = f"{vm_name_prefix()}-base-"
        try:
            vols = [v for v in self.pool().listAllVolumes(0) if v.name().startswith(prefix)]
        except libvirt.libvirtError as e:
            raise _err(f"list volumes of {self.pool_name}", e) from None
        # (mtime, allocation, volume) of each layer, read once: each is a call to the host
        layers = [(_mtime(v), v.info()[2], v) for v in vols if not v.name().endswith(".ok")]
        used = self._paths_in_use()
        now = time.time()
        held = sum(alloc for _mt, alloc, _v in layers)
        removable = sorted(
            (x for x in layers if x[2].path() not in used and now - x[0] >= min_age_s), key=lambda x: x[0]
        )
        deleted = []
        for _mt, alloc, v in removable:
            if held <= keep_bytes:
                break
            name = v.name()
            self.delete(f"{name}.ok")  # first: a half-deleted layer then reads as an unfinished upload
            self.delete(name)
            held -= alloc
            deleted.append(name)
        if deleted:
            _log().info("libvirt.content_pruned", host=self.host, volumes=len(deleted), kept_bytes=held)
        return deleted

    def _paths_in_use(self) -> set[str]:
        """Every file a VM defined on the host reads: its disks and what they are layered on."""
        todo: list[str] = []
        try:
            for dom in self.conn.listAllDomains():
                root = ET.fromstring(dom.XMLDesc(0))
                # the variable store a VM's firmware copies at its first start (a content volume)
                todo.extend(nv.get("template", "") for nv in root.iterfind("./os/nvram[@template]"))
                for src in root.iterfind("./devices/disk/source"):
                    try:
                        vol = volume_of_source(self.conn, src)
                    except libvirt.libvirtError:
                        continue  # gone already, or a file that is no pool volume: not ours to prune
                    if vol is not None:
                        todo.append(vol.path())
        except libvirt.libvirtError as e:
            raise _err("list domains", e) from None
        seen: set[str] = set()
        while todo:
            path = todo.pop()
            if path in seen:
                continue
            seen.add(path)
            try:
                xml = self.conn.storageVolLookupByPath(path).XMLDesc(0)
            except libvirt.libvirtError:
                continue  # not a pool volume: its chain is not ours to prune
            below = ET.fromstring(xml).findtext("./backingStore/path")
            if below:
                todo.append(below)
        return seen

    def remove_pool(self) -> None:
        """Delete every volume of the pool, then the pool itself (decommissioning, test hosts)."""
        try:
            pool = self.conn.storagePoolLookupByName(self.pool_name)
        except libvirt.libvirtError:
            return
        for vol in pool.listAllVolumes(0) if pool.isActive() else []:
            vol.delete(0)
        if pool.isActive():
            pool.destroy()
        pool.undefine()
        self._pool_obj = None


def volume_of_source(conn: libvirt.virConnect, src: ET.Element | None) -> libvirt.virStorageVol | None:
    """The storage volume a domain disk's ``<source>`` names: a pool volume, or a file the host's
    libvirt knows as one (raises libvirtError when it knows none); None for other sources."""
    if src is not None and src.get("pool"):
        return conn.storagePoolLookupByName(src.get("pool")).storageVolLookupByName(src.get("volume"))
    if src is not None and src.get("file"):
        return conn.storageVolLookupByPath(src.get("file"))
    return None


def _abort(stream: libvirt.virStream) -> None:
    """Ends a stream that failed half-way; a stream libvirt already closed has nothing to end."""
    try:
        stream.abort()
    except libvirt.libvirtError:
        pass


def _send_all(stream: libvirt.virStream, data: bytes) -> None:
    """Send ``data`` in pieces of one RPC message: libvirt takes at most that much per call, and
    handing it the whole rest each time copied the remainder again for every message (a 4 MiB
    read cost 16 sends and ~34 MiB of copies: 256 MiB uploaded in 3.9 s against 0.5 s)."""
    view = memoryview(data)
    off = 0
    while off < len(data):
        n = stream.send(view[off : off + SEND_MAX].tobytes())
        if n == -2:  # a non-blocking stream that is full: try again
            time.sleep(0.01)
            continue
        off += n


def _mtime(vol: libvirt.virStorageVol) -> float:
    """When a volume's file was last written (its upload, for a content volume)."""
    t = ET.fromstring(vol.XMLDesc(0)).findtext("./target/timestamps/mtime")
    return float(t) if t else 0.0


_timed_largest: dict[str, int] = {}  # host -> the largest upload this worker timed a copy of
_timed_lock = threading.Lock()


def _new_largest(host: str, size: int) -> bool:
    """True (and remembered) when no upload to ``host`` as large as ``size`` has had its local
    copy timed in this worker: the benchmark reads the largest upload's yardstick only."""
    with _timed_lock:
        if size <= _timed_largest.get(host, 0):
            return False
        _timed_largest[host] = size
        return True


def _is_sparse(path: Path) -> bool:
    """More than a quarter of the file is holes (a raw disk image, typically)."""
    st = path.stat()
    return st.st_size > CHUNK and st.st_blocks * 512 < st.st_size * 0.75


_ZEROS = bytes(CHUNK)


def _sparse_reader(f, h) -> tuple:
    """(data handler, hole handler, skip handler, opaque) for ``virStream.sparseSendAll`` over the
    open file ``f``: data and holes found with SEEK_DATA/SEEK_HOLE; ``h`` hashes what the file reads as."""
    fd = f.fileno()

    def data(_stream, nbytes: int, _opaque) -> bytes:
        b = os.read(fd, nbytes)
        h.update(b)
        return b

    def hole(_stream, _opaque) -> list:
        cur = os.lseek(fd, 0, os.SEEK_CUR)
        end = os.fstat(fd).st_size
        if cur >= end:
            return [False, 0]  # the end: sparseSendAll stops
        try:
            nxt = os.lseek(fd, cur, os.SEEK_DATA)
        except OSError:  # ENXIO: only a trailing hole is left
            nxt = end
        if nxt > cur:
            section = [False, nxt - cur]
        else:
            section = [True, os.lseek(fd, cur, os.SEEK_HOLE) - cur]
        os.lseek(fd, cur, os.SEEK_SET)
        return section

    def skip(_stream, length: int, _opaque) -> int:
        left = length
        while left:
            n = min(left, CHUNK)
            h.update(_ZEROS[:n])
            left -= n
        os.lseek(fd, length, os.SEEK_CUR)
        return 0

    return data, hole, skip, None
