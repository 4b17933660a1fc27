"""Validated run configuration: the only place defaults live (see :mod:`rpbt.config.schema`).

This package's names are re-exported here, so ``from rpbt.config import Config`` is how every other module reads
them.
"""

from rpbt.config.schema import (
    DEFAULT_CONFIG_PATH,
    HPARAM_NAMES,
    HPARAM_RANGES,
    HPARAMS,
    HPARAMS_BY_NAME,
    SEARCHABLE,
    AdversarialConfig,
    AgentConfig,
    BackendConfig,
    Config,
    ConfigError,
    ConfigLoader,
    CriticConfig,
    DuplicateKeyError,
    EnvConfig,
    HParam,
    NetworkConfig,
    PB2Config,
    PBTConfig,
    RunConfig,
    SearchDim,
    TradingConfig,
    TradingDataConfig,
    VGSConfig,
    _format_errors,
    apply_overrides,
    config_from_dict,
    default_search_space,
    env_id_in,
    hparams_in_force,
    import_env_module,
    load_config,
    load_yaml,
    member_hparams,
    name_custom_env,
    read_config_data,
    set_dotted,
)

__all__ = [
    "DEFAULT_CONFIG_PATH", "HPARAM_NAMES", "HPARAM_RANGES", "HPARAMS", "HPARAMS_BY_NAME", "SEARCHABLE",
    "AdversarialConfig", "AgentConfig", "BackendConfig", "Config", "ConfigError", "ConfigLoader", "CriticConfig",
    "DuplicateKeyError", "EnvConfig", "HParam", "NetworkConfig", "PB2Config", "PBTConfig", "RunConfig", "SearchDim",
    "TradingConfig", "TradingDataConfig", "VGSConfig", "_format_errors", "apply_overrides", "config_from_dict",
    "default_search_space", "env_id_in", "hparams_in_force", "import_env_module", "load_config", "load_yaml",
    "member_hparams", "name_custom_env", "read_config_data", "set_dotted",
]
