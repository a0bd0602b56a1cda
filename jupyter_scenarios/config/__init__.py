"""Configuration: sections, the ``Config`` registry, TOML files and checks."""

from .config import Config, registry
from .sections import (
    CoreSection,
    DataNodeConfig,
    JobConfig,
    ScenarioConfig,
    Section,
    TaskConfig,
)

__all__ = [
    "Config",
    "CoreSection",
    "DataNodeConfig",
    "JobConfig",
    "ScenarioConfig",
    "Section",
    "TaskConfig",
    "registry",
]
