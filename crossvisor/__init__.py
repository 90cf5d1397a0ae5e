"""crossvisor: hypervisor-interoperability campaigns on Temporal (CLI, config, logging, metrics)."""

__version__ = "0.1.0"
