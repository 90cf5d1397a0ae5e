"""Pure domain logic: no I/O, safe to import inside Temporal workflows."""
