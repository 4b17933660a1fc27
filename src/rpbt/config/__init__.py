"""Validated run configuration: the only place defaults live.

:mod:`~rpbt.config.schema`: the pydantic models and the table of per-member hyperparameters;
:mod:`~rpbt.config.loading`: YAML files, dotted overrides and error messages. Their public names are re-exported
here: other modules import them as ``from rpbt.config import Config``.
"""

from rpbt.config.loading import (
    DEFAULT_CONFIG_PATH,
    SHIPPED_CONFIG_DIR,
    ConfigLoader,
    DottedSetter,
    DuplicateKeyError,
    apply_overrides,
    config_from_dict,
    config_path,
    env_id_given,
    format_errors,
    load_config,
    load_yaml,
    name_custom_env,
    read_config_data,
    set_dotted,
    shipped_configs,
)
from rpbt.config.schema import (
    HPARAM_NAMES,
    HPARAMS,
    HPARAMS_BY_NAME,
    SEARCHABLE,
    AdversarialConfig,
    AgentConfig,
    BackendConfig,
    Config,
    ConfigError,
    CriticConfig,
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
    default_search_space,
    hparams_in_force,
    import_env_module,
    member_hparams,
)

__all__ = [
    "DEFAULT_CONFIG_PATH", "SHIPPED_CONFIG_DIR", "HPARAM_NAMES", "HPARAMS", "HPARAMS_BY_NAME", "SEARCHABLE",
    "AdversarialConfig", "AgentConfig", "BackendConfig", "Config", "ConfigError", "ConfigLoader", "CriticConfig",
    "DottedSetter", "DuplicateKeyError", "EnvConfig", "HParam", "NetworkConfig", "PB2Config", "PBTConfig", "RunConfig",
    "SearchDim", "TradingConfig", "TradingDataConfig", "VGSConfig", "format_errors", "apply_overrides",
    "config_from_dict", "config_path", "default_search_space", "env_id_given", "hparams_in_force",
    "import_env_module", "load_config", "load_yaml", "member_hparams", "name_custom_env", "read_config_data",
    "set_dotted", "shipped_configs",
]
