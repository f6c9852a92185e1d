"""Typed run configuration: schema per concern, YAML loading, dotted overrides."""

from tunelab.config.loader import config_from_dict, dump_config, load_config
from tunelab.config.schema import (
    DataSettings,
    DataSource,
    FreezeSettings,
    LoraSettings,
    ModelSettings,
    OutputSettings,
    RunConfig,
    TrainSettings,
)

__all__ = [
    "DataSettings",
    "DataSource",
    "FreezeSettings",
    "LoraSettings",
    "ModelSettings",
    "OutputSettings",
    "RunConfig",
    "TrainSettings",
    "config_from_dict",
    "dump_config",
    "load_config",
]
