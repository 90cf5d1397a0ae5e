"""The campaign client: what the CLI commands (``crossvisor/commands/``) and the web UI
(``crossvisor/serve.py``) both do with campaigns, so that they show the same things the same way.
Commands only parse arguments and print.

- ``connection``: the one Temporal client per process, its failures as one line (``CliError``);
- ``starting``: start a campaign from a spec (or find it); ``rerun``: a rerun of an ended one;
- ``steering``: one update per operator action, Temporal's cancel request;
- ``reading``: one campaign: input, where it stands (snapshot, running stages, ETA), its result;
- ``campaigns``: the list of campaigns and the result loader (``Campaigns``);
- ``formats``: durations, ETA and counts as people read them;
- ``plandiff``: why an id already in use belongs to another spec.
"""
