"""Campaign reports rendered from a ``CampaignResult``: what it says (``analysis``), then one
renderer per format: JSON (``json_report``), JUnit XML (``junit``), HTML (``html_report``, with
``charts`` and ``markup``).

Pure functions (no I/O beyond reading this package's own stylesheet once) so the CLI, the web UI
(``crossvisor serve``), tests and any CI job render identical output. Every string that came from a
guest, a host or a tool is untrusted: it is escaped for its output format, stripped of characters
XML cannot carry, and passed through ``scrub`` (``redaction``) so a password that slipped into an
error message or evidence never lands in a report that gets mailed around.

The names below are the package's interface (``from crossvisor import report; report.render_html``).
"""

from crossvisor.core.timefmt import human_duration, human_time, parse_time, span_seconds
from crossvisor.report.analysis import (
    GRADES,
    ODCA_LABEL,
    Scorecard,
    Tally,
    cause_key,
    cell_seconds,
    compare,
    first_reason,
    image_order,
    platform_order,
    root_causes,
    scorecard,
)
from crossvisor.report.charts import charts_html, heatmap_svg, stage_durations_svg, stage_timeline_html, timeline_svg
from crossvisor.report.html_report import (
    campaign_body,
    campaign_header,
    cell_detail_html,
    comparison_html,
    distinct_consoles,
    html_page,
    inventory_html,
    matrix_html,
    render_html,
    root_causes_html,
    scorecard_html,
    stylesheet,
)
from crossvisor.report.json_report import parse_json, render_json
from crossvisor.report.junit import check_seconds, render_junit
from crossvisor.report.markup import Links, cell_anchor, escape, file_links, safe_relative
from crossvisor.report.redaction import REDACTED, redact, redact_mapping, scrub

__all__ = [
    "GRADES",
    "ODCA_LABEL",
    "REDACTED",
    "Links",
    "Scorecard",
    "Tally",
    "campaign_body",
    "campaign_header",
    "cause_key",
    "cell_anchor",
    "cell_detail_html",
    "cell_seconds",
    "charts_html",
    "check_seconds",
    "compare",
    "comparison_html",
    "distinct_consoles",
    "escape",
    "file_links",
    "first_reason",
    "heatmap_svg",
    "html_page",
    "human_duration",
    "human_time",
    "image_order",
    "inventory_html",
    "matrix_html",
    "parse_json",
    "parse_time",
    "platform_order",
    "redact",
    "redact_mapping",
    "render_html",
    "render_json",
    "render_junit",
    "root_causes",
    "root_causes_html",
    "safe_relative",
    "scorecard",
    "scorecard_html",
    "scrub",
    "span_seconds",
    "stage_durations_svg",
    "stage_timeline_html",
    "stylesheet",
    "timeline_svg",
]
