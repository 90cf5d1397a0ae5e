"""The shared core every layer may use: settings, logging with secret redaction, metrics, the
result store and the error types. It imports only ``domain`` (pure) and third-party packages,
never drivers, inventory, activities, workflows or the operator layer (``make lint`` checks it)."""
