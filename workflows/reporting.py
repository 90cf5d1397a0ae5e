"""How a cell workflow tells its campaign that it finished, once the campaign has continued as new.

Temporal does not carry child workflows over a continue-as-new: the new run is not the parent of
the cells its previous run started, and their completion events go to the closed run. Temporal's
guidance for this case (docs "Child Workflows": children do not carry over; temporalio/temporal
#3666: the only option is ``ParentClosePolicy.ABANDON``) is to let the children outlive the run and
have them signal the parent by workflow id, which reaches whichever run is current. So a campaign
about to continue as new signals each of its running cells ``report_to_campaign``; such a cell,
when it finishes, signals ``cell_finished`` to its parent's workflow id with its ``CellReport`` and
its CellResult (passed through untouched). A cell never asked (no continue-as-new while it ran, or
a campaign of replay sets v2-v4) does nothing extra: its history is what it always was.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import FailureError

with workflow.unsafe.imports_passed_through():
    from domain.messages import CellInput, CellReport
    from domain.model import CellResult

REPORT_TO_CAMPAIGN = "report_to_campaign"  # campaign -> cell: tell me (by workflow id) when you finish
CELL_FINISHED = "cell_finished"  # cell -> campaign: (CellReport, CellResult)


class ReportsToCampaign:
    """Mixin for cell workflows: the ``report_to_campaign`` signal and ``reported``."""

    _report_to_campaign = False

    @workflow.signal(name=REPORT_TO_CAMPAIGN)
    def report_to_campaign(self) -> None:
        self._report_to_campaign = True

    async def reported(self, inp: CellInput, result: CellResult) -> CellResult:
        """``result``, after telling the campaign about it if the campaign asked. The signal is
        awaited: a signal still in flight when its sender closes may never be delivered."""
        parent = workflow.info().parent
        if self._report_to_campaign and parent is not None:
            report = CellReport(inp.cell.id, inp.attempt, workflow.info().workflow_id)
            try:
                await workflow.get_external_workflow_handle(parent.workflow_id).signal(
                    CELL_FINISHED, args=[report, result]
                )
            except FailureError as e:  # the campaign is gone (terminated): nobody left to tell
                workflow.logger.warning("campaign %s not told of %s: %s", parent.workflow_id, inp.cell.id, e)
        return result
