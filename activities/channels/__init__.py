"""Observation channels that reach into a running guest from the worker: one module per channel."""
