"""Validated run configuration: the only place defaults live.

A run is described by one YAML file with the sections ``env``, ``agent``, ``pbt``, ``run`` and ``backend``; every key
has a default, so an absent or empty section means all defaults. :func:`load_config` reads the file, applies dotted command-line overrides
(``agent.learning_rate=1e-3``, as Hydra / OmegaConf users expect) and validates the result with pydantic.
Every model forbids unknown keys, so a typo is reported with its dotted path instead of being silently ignored.

Errors: :class:`ConfigError` (a ``ValueError``) whose message names the file, the dotted key and what was expected.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

DEFAULT_CONFIG_PATH = Path(__file__).parent / "configs" / "default.yaml"


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key and what was expected."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------------------------------- env


class TradingDataConfig(_Strict):
    """Market data for ``env.id: trading``: a shipped series or the user's own CSV."""

    source: Literal["googl", "eurusd", "csv"] = "googl"
    path: Optional[str] = None  # CSV file when source == "csv" (or when given, implies csv)
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)  # train / validation / test fractions, chronological

    @model_validator(mode="after")
    def _check(self) -> "TradingDataConfig":
        if self.path is not None and self.source != "csv":
            object.__setattr__(self, "source", "csv")
        if self.source == "csv" and not self.path:
            raise ValueError("env.data.path is required when env.data.source is 'csv'")
        if any(f < 0 for f in self.split) or not math.isclose(sum(self.split), 1.0, abs_tol=1e-6):
            raise ValueError(f"env.data.split must be three non-negative fractions summing to 1, got {self.split}")
        return self


class TradingConfig(_Strict):
    """Options of the trading environment (used when ``env.id == 'trading'``)."""

    action: Literal["discrete", "continuous"] = "discrete"
    window: int = Field(1, ge=1)
    features: list[Literal["log_volume_change", "high_low_range"]] = Field(default_factory=list)
    cost_bps: float = Field(1.0, ge=0.0)
    episode_length: int = Field(256, ge=2)
    equity_floor: float = Field(0.5, ge=0.0, lt=1.0)
    eval_episodes: int = Field(4, ge=1)  # deterministic validation episodes per member for the PBT score


class EnvConfig(_Strict):
    """Which environment every member trains on.

    ``id`` is a Gymnasium id (``CartPole-v1``), a POPGym id (``popgym-PositionOnlyCartPoleEasy-v0``) or
    ``trading`` for rpbt's market environment. ``num_envs`` is per member.
    """

    id: str = "popgym-PositionOnlyCartPoleEasy-v0"
    num_envs: int = Field(8, ge=1)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    observation_noise_std: float = Field(0.0, ge=0.0)  # Gaussian noise added to observations (noisy POMDPs)
    data: TradingDataConfig = Field(default_factory=TradingDataConfig)
    trading: TradingConfig = Field(default_factory=TradingConfig)


# --------------------------------------------------------------------------------------------------- agent


class NetworkConfig(_Strict):
    encoder_sizes: list[int] = Field(default_factory=lambda: [64])
    lstm_hidden_size: int = Field(64, ge=1)
    lstm_num_layers: int = Field(1, ge=1)
    log_std_init: float = 0.0


class CriticConfig(_Strict):
    """The value head: ``scalar`` (MSE), ``quantile`` (quantile Huber) or ``categorical`` (C51 two-hot)."""

    kind: Literal["scalar", "quantile", "categorical"] = "quantile"
    num_quantiles: int = Field(32, ge=1)
    num_atoms: int = Field(51, ge=2)
    v_min: float = -10.0
    v_max: float = 10.0
    huber_kappa: float = Field(1.0, gt=0.0)
    twin: bool = False
    cvar_alpha: float = Field(0.05, gt=0.0, le=1.0)
    normalize_returns: bool = True

    @model_validator(mode="after")
    def _support(self) -> "CriticConfig":
        if self.v_max <= self.v_min:
            raise ValueError(f"agent.critic.v_max ({self.v_max}) must be greater than v_min ({self.v_min})")
        return self


class VGSConfig(_Strict):
    """Variance gradient scaler (see :mod:`rpbt.agent.vgs`)."""

    enabled: bool = False
    beta: float = Field(0.99, gt=0.0, lt=1.0)
    alpha: float = Field(1.0, ge=0.0)
    min_scale: float = Field(0.1, gt=0.0, le=1.0)
    warmup: int = Field(10, ge=0)


class AdversarialConfig(_Strict):
    """State-adversarial PPO (Zhang et al. 2020), see :mod:`rpbt.agent.adversary`."""

    enabled: bool = False
    epsilon: float = Field(0.05, ge=0.0)
    epsilon_schedule: Literal["constant", "linear", "cosine"] = "constant"
    robust_kl_coef: float = Field(0.1, ge=0.0)
    ratio: float = Field(1.0, ge=0.0, le=1.0)
    warmup: int = Field(0, ge=0)
    attack: Literal["pgd", "fgsm"] = "pgd"
    norm: Literal["linf", "l2"] = "linf"
    steps: int = Field(10, ge=1)
    step_size: Optional[float] = None  # default: 2.5 * epsilon / steps (Madry et al.)
    value_coef: float = Field(0.0, ge=0.0)


class AgentConfig(_Strict):
    """Recurrent PPO learner. Hyperparameters here are the initial values of every member unless searched."""

    num_steps: int = Field(128, ge=1)  # rollout length per env
    num_minibatches: int = Field(4, ge=1)  # minibatches split by environment
    update_epochs: int = Field(4, ge=1)
    learning_rate: float = Field(2.5e-4, gt=0.0)
    ent_coef: float = Field(0.01, ge=0.0)
    clip_range: float = Field(0.2, gt=0.0)
    clip_range_vf: Optional[float] = None
    vf_coef: float = Field(0.5, ge=0.0)
    gamma: float = Field(0.99, gt=0.0, le=1.0)
    gae_lambda: float = Field(0.95, ge=0.0, le=1.0)
    max_grad_norm: float = Field(0.5, gt=0.0)
    adam_eps: float = Field(1e-5, gt=0.0)
    normalize_advantage: bool = True
    normalize_observations: bool = True
    obs_clip: float = Field(10.0, gt=0.0)
    # Torch device of every learner tensor: auto (CUDA when available), cpu, cuda or cuda:N. Environments stay on the
    # CPU. A checkpoint is device-independent.
    device: str = "auto"
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    critic: CriticConfig = Field(default_factory=CriticConfig)
    vgs: VGSConfig = Field(default_factory=VGSConfig)
    adversarial: AdversarialConfig = Field(default_factory=AdversarialConfig)


# --------------------------------------------------------------------------------------------------- pbt


class SearchDim(_Strict):
    """One searched hyperparameter.

    ``type``: ``float`` (with ``scale`` linear or log), ``int`` or ``categorical`` (``values``). ``low``/``high``
    bound numeric dimensions. Every member starts from a draw of the prior (uniform; log-uniform for ``log``).
    """

    type: Literal["float", "int", "categorical"] = "float"
    low: Optional[float] = None
    high: Optional[float] = None
    scale: Literal["linear", "log"] = "linear"
    values: Optional[list[Union[float, int, str, bool]]] = None

    @model_validator(mode="after")
    def _check(self) -> "SearchDim":
        if self.type == "categorical":
            if not self.values:
                raise ValueError("a categorical dimension needs a non-empty 'values' list")
        else:
            if self.low is None or self.high is None:
                raise ValueError(f"a {self.type} dimension needs 'low' and 'high'")
            if self.high < self.low:
                raise ValueError(f"'high' ({self.high}) must be >= 'low' ({self.low})")
            if self.scale == "log" and self.low <= 0:
                raise ValueError(f"a log-scale dimension needs low > 0, got {self.low}")
        return self


SEARCHABLE = {
    "learning_rate",
    "ent_coef",
    "clip_range",
    "vf_coef",
    "gamma",
    "gae_lambda",
    "max_grad_norm",
    "adversarial.epsilon",
    "adversarial.robust_kl_coef",
    "adversarial.ratio",
}


# Valid range of every searchable hyperparameter: (low, low_inclusive, high, high_inclusive); None = unbounded.
HPARAM_RANGES: dict[str, tuple[Optional[float], bool, Optional[float], bool]] = {
    "learning_rate": (0.0, False, None, False),
    "ent_coef": (0.0, True, None, False),
    "clip_range": (0.0, False, None, False),
    "vf_coef": (0.0, True, None, False),
    "gamma": (0.0, False, 1.0, True),
    "gae_lambda": (0.0, True, 1.0, True),
    "max_grad_norm": (0.0, False, None, False),
    "adversarial.epsilon": (0.0, True, None, False),
    "adversarial.robust_kl_coef": (0.0, True, None, False),
    "adversarial.ratio": (0.0, True, 1.0, True),
}


def _check_in_range(name: str, value: Any, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: {value!r} is not a number")
    low, low_inc, high, high_inc = HPARAM_RANGES[name]
    ok = (low is None or value > low or (low_inc and value == low)) and (
        high is None or value < high or (high_inc and value == high))
    if not ok:
        lo = "-inf" if low is None else f"{low}"
        hi = "inf" if high is None else f"{high}"
        interval = f"{'[' if low_inc else '('}{lo}, {hi}{']' if high_inc else ')'}"
        raise ValueError(f"{where}: {value!r} is outside its valid range {interval}")


class PBTConfig(_Strict):
    """Population-Based Training (Jaderberg et al. 2017)."""

    population_size: int = Field(8, ge=1)
    perturbation_interval: int = Field(4, ge=1)  # updates between ready checks
    burn_in: int = Field(4, ge=0)  # updates before a member is first ready
    exploit: Literal["truncation", "tournament"] = "truncation"
    quantile_fraction: float = Field(0.25, gt=0.0, le=0.5)
    resample_probability: float = Field(0.25, ge=0.0, le=1.0)
    perturb_factors: tuple[float, float] = (0.8, 1.2)
    score: Literal["mean", "cvar"] = "mean"
    score_window: int = Field(20, ge=1)  # K: last finished episodes in the score
    score_cvar_alpha: float = Field(0.1, gt=0.0, le=1.0)
    # Which returns the score is computed from: "training" = the member's last score_window finished training
    # episodes; "validation" = env.trading.eval_episodes deterministic episodes on the validation split, run by
    # the runner after each round (trading only: selection must not reward overfitting the training period);
    # "auto" = validation for env.id trading, training otherwise.
    score_source: Literal["auto", "training", "validation"] = "auto"
    mode: Literal["max", "min"] = "max"
    optimizer_state: Literal["copy", "reset"] = "copy"
    hidden_state: Literal["keep", "zero", "reset_episodes", "burn_in"] = "burn_in"
    burn_in_max_steps: int = Field(512, ge=1)
    search_space: dict[str, SearchDim] = Field(default_factory=dict)

    @field_validator("search_space")
    @classmethod
    def _known(cls, v: dict[str, SearchDim]) -> dict[str, SearchDim]:
        for key, dim in v.items():
            name = key.removeprefix("agent.")
            if name not in SEARCHABLE:
                raise ValueError(f"unknown hyperparameter {key!r}; searchable: {sorted(SEARCHABLE)}")
            values = dim.values if dim.type == "categorical" else [dim.low, dim.high]
            for value in values or []:
                _check_in_range(name, value, f"search space of {key}")
        return {k.removeprefix("agent."): d for k, d in v.items()}

    @field_validator("perturb_factors")
    @classmethod
    def _positive_factors(cls, v: tuple[float, float]) -> tuple[float, float]:
        if any(f <= 0 for f in v):
            raise ValueError(f"perturb factors must be positive, got {v}")
        return v


# --------------------------------------------------------------------------------------------------- run


class RunConfig(_Strict):
    total_env_steps: int = Field(200_000, ge=1)  # per member
    seed: int = 0
    dir: str = "runs/default"
    # torch threads in this process (None: torch's default). 1 by default: a small recurrent net is a long chain of
    # tiny ops, and intra-op threads cost more than they give (5-16x slower measured on a busy 2-core machine).
    torch_threads: Optional[int] = Field(1, ge=1)
    progress: bool = True
    tensorboard: bool = True
    # A member whose observations, rewards, losses, gradients or weights turn non-finite: "restore" puts it back to
    # its last committed state (or a healthy donor's, before the first commit) and goes on; "error" stops the run.
    on_member_fault: Literal["restore", "error"] = "restore"
    max_member_faults: int = Field(3, ge=1)  # faults of one member before the run stops
    keep_checkpoints: int = Field(2, ge=1)  # committed rounds kept on disk; resume falls back to an older one


class BackendConfig(_Strict):
    kind: Literal["local", "process", "ray"] = "local"
    num_workers: Optional[int] = None  # process/ray: shards; default CPU count
    address: Optional[str] = None  # ray: join an existing cluster
    num_cpus_per_shard: float = Field(1.0, gt=0.0)
    max_failures: int = Field(3, ge=0)


class Config(_Strict):
    """A whole run: ``env``, ``agent``, ``pbt``, ``run`` and ``backend`` sections."""

    env: EnvConfig = Field(default_factory=EnvConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    pbt: PBTConfig = Field(default_factory=PBTConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    backend: BackendConfig = Field(default_factory=BackendConfig)

    @model_validator(mode="after")
    def _cross(self) -> "Config":
        if self.env.num_envs % self.agent.num_minibatches != 0:
            raise ValueError(
                f"env.num_envs ({self.env.num_envs}) must be divisible by agent.num_minibatches "
                f"({self.agent.num_minibatches}): minibatches are split by environment"
            )
        if self.pbt.score_source == "validation" and self.env.id != "trading":
            raise ValueError(
                f"pbt.score_source: validation needs a walk-forward validation split, which only env.id: trading "
                f"has (env.id is {self.env.id!r}); use training or auto"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration as plain YAML-able data, every default filled in."""
        return self.model_dump(mode="json")


# --------------------------------------------------------------------------------------------------- loading


def _parse_value(text: str) -> Any:
    """Parse an override's right-hand side as YAML (so ``1e-3`` is a float, ``[1, 2]`` a list, ``null`` None)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value) if any(c in value for c in "eE.") else value
        except ValueError:
            return value
    return value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides to nested config data (in place, also returned).

    Raises :class:`ConfigError` for an override without ``=`` or one that descends into a non-mapping.
    """
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key.sub=value")
        key, _, raw = item.partition("=")
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r}: empty key segment")
        node = data
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {'.'.join(parts[: depth + 1])} is not a section")
            node = child
        node[parts[-1]] = _parse_value(raw)
    return data


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; `rpbt config` prints every valid key)"
        elif "input" in e and e["type"] != "missing" and not isinstance(e["input"], dict):
            msg = f"{msg} (got {e['input']!r})"
        lines.append(f"  {loc or '<root>'}: {msg}")
    return "\n".join(lines)


def config_from_dict(data: dict[str, Any], source: str = "<dict>") -> Config:
    """Validate nested config data; raises :class:`ConfigError` naming every bad key."""
    # An empty section (`agent:` with nothing under it) means "all defaults", as in the file it came from.
    data = {k: ({} if v is None and k in Config.model_fields else v) for k, v in data.items()}
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def load_config(path: Optional[Union[str, Path]] = None, overrides: Optional[list[str]] = None) -> Config:
    """Load a YAML config (the shipped default when ``path`` is None) and apply dotted overrides.

    Raises :class:`ConfigError` when the file is missing, is not a YAML mapping, or fails validation; the message
    names the file and the dotted key.
    """
    path, data = read_config_data(path)
    apply_overrides(data, list(overrides or []))
    return config_from_dict(data, source=str(path))


def read_config_data(path: Optional[Union[str, Path]] = None) -> tuple[Path, dict[str, Any]]:
    """The raw mapping of a YAML config file (the shipped default when ``path`` is None), not yet validated.

    Raises :class:`ConfigError` naming the file when it is missing, not YAML, or not a mapping.
    """
    path = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    except UnicodeDecodeError as err:  # a binary file passed as the config
        raise ConfigError(f"{path}: not a YAML text file (not UTF-8: {err.reason} at byte {err.start})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with sections env, agent, pbt, run; got {type(data).__name__}")
    return path, data


def member_hparams(cfg: Config) -> dict[str, float]:
    """The initial value of every per-member hyperparameter (names as in ``SEARCHABLE``)."""
    a = cfg.agent
    return {
        "learning_rate": a.learning_rate,
        "ent_coef": a.ent_coef,
        "clip_range": a.clip_range,
        "vf_coef": a.vf_coef,
        "gamma": a.gamma,
        "gae_lambda": a.gae_lambda,
        "max_grad_norm": a.max_grad_norm,
        "adversarial.epsilon": a.adversarial.epsilon,
        "adversarial.robust_kl_coef": a.adversarial.robust_kl_coef,
        "adversarial.ratio": a.adversarial.ratio,
    }
