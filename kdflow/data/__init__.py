"""Data sources, canonical tables, splits and validation suites.

SOURCES is declared here, free of torch and numpy, so kdflow.config validates data.source
without importing the loaders (kdflow/data/sources.py imports kdflow.config).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from kdflow.registry import Registry

if TYPE_CHECKING:
    from kdflow.config import DataParams
    from kdflow.data.sources import RawData

SOURCES: Registry[Callable[[DataParams], RawData]] = Registry(
    "data source",
    modules={
        name: "kdflow.data.sources"
        for name in ("mnist1d", "digits", "cifar10", "cifar100", "imagefolder")
    },
)
# The sources read from a local folder, so they need data.path.
LOCAL_SOURCES = ("cifar10", "cifar100", "imagefolder")
