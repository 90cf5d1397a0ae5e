"""The ``crossvisor`` command groups. Each module is one group and has two functions:

    register(subparsers) -> None            add its parsers to ``crossvisor``'s subparsers
    dispatch(args, settings) -> int         run the parsed command (may be a coroutine); the exit code

``crossvisor.cli.GROUPS`` is the one list of groups; a new group (e.g. ``crossvisor.netbox_cli``)
plugs in by being named there. Modules import only argparse at the top (the CLI answers in
well under a second); everything else is imported where a command runs.
"""
