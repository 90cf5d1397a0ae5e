"""Hypervisor drivers: one interface (``drivers.base.Driver``), one implementation per API family."""
