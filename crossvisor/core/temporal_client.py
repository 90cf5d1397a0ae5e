"""Connect to Temporal with production settings: address, namespace, mTLS or API key from files."""

from __future__ import annotations

from pathlib import Path

from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.service import TLSConfig

from crossvisor.core.config import Settings
from crossvisor.core.credentials import resolve_secret


def _read(path: str) -> bytes | None:
    return Path(path).read_bytes() if path else None


async def connect(settings: Settings, runtime: Runtime | None = None) -> Client:
    tls: TLSConfig | bool = False
    if settings.temporal_tls_cert or settings.temporal_tls_ca:
        tls = TLSConfig(
            server_root_ca_cert=_read(settings.temporal_tls_ca),
            client_cert=_read(settings.temporal_tls_cert),
            client_private_key=_read(settings.temporal_tls_key),
        )
    # resolved like every credential: bounded read, and registered so no log line can show it
    api_key = resolve_secret(f"file:{settings.temporal_api_key_file}").reveal() if settings.temporal_api_key_file else None
    if api_key and tls is False:
        tls = True  # Temporal Cloud API keys require TLS
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        tls=tls,
        api_key=api_key,
        runtime=runtime,
    )
