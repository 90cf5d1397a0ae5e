"""Lab inventory: hosts and their hypervisors, from a file (embedded default) or NetBox."""
