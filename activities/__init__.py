"""Temporal activities: all I/O (drivers, inventory, artifacts, metrics) happens here."""
