"""Which packages are installed, read from their metadata without importing them."""

from __future__ import annotations

from importlib import metadata


def package_version(distribution: str) -> str | None:
    """The installed version of a distribution, or None when it is not installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
