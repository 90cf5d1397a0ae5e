"""Whether the source hosts have the templates a spec's ``template:`` images name: asked of each
host before a campaign starts (``campaign start``, ``validate --hosts``), so that a typo in a
template's name is refused then, naming the image, the template and the host, instead of ending
every cell of that image at provision."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from domain.matrix import expand
from domain.plan import CampaignPlan


@dataclass
class TemplateCheck:
    missing: list[str] = field(default_factory=list)  # bad input: the host answered, it has no such VM
    unchecked: list[str] = field(default_factory=list)  # a host this machine could not ask (checked at provision)
    found: list[str] = field(default_factory=list)  # "image: template on host"


def check_templates(plan: CampaignPlan, home: Path) -> TemplateCheck:
    """Each ``template:`` image's template on every host of every source platform it moves from."""
    from drivers.factory import open_driver
    from inventory.factory import open_inventory

    out = TemplateCheck()
    templates = {i.name: i.template for i in plan.images if i.template}
    if not templates:
        return out
    sources: dict[str, set[str]] = {}  # source platform -> template images moved from it
    for cell in expand(plan):
        if cell.image in templates:
            sources.setdefault(cell.source, set()).add(cell.image)
    platforms = {p.name: p for p in plan.platforms}
    inv = open_inventory(plan.inventory, home, plan.netbox or None)
    for platform in sorted(sources):
        p = platforms[platform]
        for host in inv.hosts({**p.select, "kind": p.kind}):
            try:
                drv = open_driver(host, home / "drivers")
            except Exception as e:  # noqa: BLE001 - unreachable from here is not bad input: said, not refused
                out.unchecked.append(f"host {host.name} ({platform}): not reachable from here ({str(e)[:160]})")
                continue
            try:
                for image in sorted(sources[platform]):
                    tpl = templates[image]
                    where = f"image {image}: template {tpl!r} on host {host.name} (source platform {platform})"
                    if tpl in drv.list_vms(tpl):
                        out.found.append(where)
                    else:
                        out.missing.append(
                            f"image {image}: template {tpl!r} does not exist on host {host.name} "
                            f"(source platform {platform}, {drv.describe()})"
                        )
            finally:
                drv.close()
    return out
