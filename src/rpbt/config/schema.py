"""The run configuration's schema: pydantic models whose defaults ARE the shipped default job.

A run has the sections ``env``, ``agent``, ``pbt``, ``run`` and ``backend`` (:class:`Config`); every key has a
default, so an absent or empty section means all defaults. ``Config()`` equals the validated
``configs/default.yaml``, which is kept as a documented copy of them. Every model forbids unknown keys, so a typo is
reported with its dotted path instead of being silently ignored, and rejects non-finite numbers. The checks that
read keys of more than one section are the named rules of :mod:`rpbt.config.rules`; reading files and overrides is
:mod:`rpbt.config.loading`.

The per-member hyperparameters (those PBT explores) are one table, :data:`HPARAMS`: name, dotted config key,
default, valid range, whether PBT may search it, its dimension in the default search space, and what it is. The
pydantic fields, their bounds, :data:`HPARAM_NAMES`, :data:`SEARCHABLE`, the search-space range checks,
:func:`default_search_space` and :func:`member_hparams` are all built from it.

Errors: a model's checks raise ``ValueError`` (pydantic's ``ValidationError``); :mod:`rpbt.config.loading` turns
those into a :class:`ConfigError` (a ``ValueError``) whose message names the dotted key, what was expected, and where
the bad value came from.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Literal, Optional, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticSerializationError, to_jsonable_python

from rpbt.config import rules


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key and what was expected."""


def _numeric_only(annotation: Any) -> bool:
    """Whether a field's type is a number (``int``, ``float``, optionally ``None``; possibly ``Annotated``) and
    nothing else."""
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if annotation in (int, float):
        return True
    if typing.get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return bool(args) and all(_numeric_only(a) for a in args)
    return False


def _numeric_list(annotation: Any) -> bool:
    """Whether a field's type is a list of numbers (optionally ``None``)."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return len(args) == 1 and _numeric_list(args[0])
    return typing.get_origin(annotation) is list and all(_numeric_only(a) for a in typing.get_args(annotation))


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool) or (type(v).__module__ == "numpy" and type(v).__name__ in ("bool", "bool_"))


class _Strict(BaseModel):
    """Base of every config model: unknown keys, non-finite floats, booleans for numbers and bad assignments are
    errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, v: Any, info: Any) -> Any:
        # pydantic reads true as 1 for an int field; `num_envs: true` is a mistake, not a count
        field = cls.model_fields.get(info.field_name)
        if field is None:
            return v
        if _is_bool(v) and _numeric_only(field.annotation):
            raise ValueError("expected a number, not a boolean")
        if isinstance(v, (list, tuple)) and any(_is_bool(x) for x in v) and _numeric_list(field.annotation):
            raise ValueError("expected a list of numbers; it holds a boolean")
        return v


# --------------------------------------------------------------------------------------------------- search dimension


class SearchDim(_Strict):
    """One searched hyperparameter (one entry of ``pbt.search_space``).

    ``type``: ``float`` (with ``scale`` linear or log), ``int`` or ``categorical`` (``values``); ``scale: log`` on
    another type is an error, not ignored. ``low``/``high`` bound numeric dimensions (on a categorical, an error;
    ``values`` on a numeric one, too). Every member starts from a
    draw of the prior (uniform; log-uniform for ``log``).

    A dimension must give explore somewhere to go: ``high > low`` (integral bounds for ``int``, ``low > 0`` for a
    log scale, which only floats have) and at least two distinct ``values`` for a categorical. This is the one place
    a dimension is checked; :class:`rpbt.pbt.space.SearchSpace` builds on a validated ``SearchDim``.
    """

    type: Literal["float", "int", "categorical"] = "float"
    low: Optional[float] = None
    high: Optional[float] = None
    scale: Literal["linear", "log"] = "linear"
    values: Optional[list[Union[float, int, str, bool]]] = None

    @field_validator("scale")
    @classmethod
    def _log_is_for_floats(cls, v: str, info: Any) -> str:
        # a field validator, so that the error names the key (pbt.search_space.NAME.scale); type is validated first
        kind = info.data.get("type")
        if v == "log" and kind == "int":
            raise ValueError("scale 'log' is only supported for float dimensions")
        if v == "log" and kind == "categorical":
            raise ValueError("a log scale is only supported for float dimensions: a categorical dimension moves "
                             "between its 'values' as listed (leave scale out)")
        return v

    @field_validator("low", "high")
    @classmethod
    def _bounds_are_for_numbers(cls, v: Optional[float], info: Any) -> Optional[float]:
        # as for scale: a field validator, so that the error names pbt.search_space.NAME.low / .high
        if v is not None and info.data.get("type") == "categorical":
            raise ValueError(f"'{info.field_name}' is for a float or int dimension; a categorical dimension "
                             f"moves between its 'values' as listed (leave {info.field_name} out, or set type: "
                             f"float to search between low and high)")
        return v

    @property
    def _a_type(self) -> str:
        """``a float`` / ``an int``, for messages."""
        return f"{'an' if self.type == 'int' else 'a'} {self.type}"

    @model_validator(mode="after")
    def _check(self) -> "SearchDim":
        if self.type == "categorical":
            values = list(self.values or [])
            if len(values) < 2:
                raise ValueError(f"a categorical dimension needs at least two 'values' to explore between, got "
                                 f"{self.values!r} (explore could never move a single value)")
            for i, a in enumerate(values):
                for b in values[i + 1:]:
                    if type(a) is type(b) and a == b:
                        raise ValueError(f"duplicate categorical value {a!r} in 'values'")
            return self
        if self.values is not None:
            raise ValueError(f"'values' ({self.values!r}) is for a categorical dimension; {self._a_type} dimension "
                             f"is bounded by 'low' and 'high' (set type: categorical to search those values)")
        if self.low is None or self.high is None:
            raise ValueError(f"{self._a_type} dimension needs 'low' and 'high'")
        if not self.high > self.low:
            raise ValueError(f"'high' ({self.high}) must be greater than 'low' ({self.low}): explore could never "
                             f"move a dimension with a single value")
        if self.type == "int":
            if self.low != int(self.low) or self.high != int(self.high):
                raise ValueError(f"an int dimension needs integral bounds, got {self.low}, {self.high}")
        if self.scale == "log" and self.low <= 0:
            raise ValueError(f"a log-scale dimension needs low > 0, got {self.low}")
        return self


# --------------------------------------------------------------------------------------------------- hyperparameters


@dataclass(frozen=True)
class HParam:
    """One per-member hyperparameter: one row of :data:`HPARAMS`.

    Attributes:
        name: the name everywhere outside the config file: :func:`member_hparams` keys, ``pbt.search_space`` keys
            (``agent.<name>`` is accepted too), checkpoints, ``pbt/hp/<name>`` metrics.
        path: its dotted config key (``agent.<name>``).
        default: every member's initial value unless searched (the pydantic field's default).
        low, low_inclusive, high, high_inclusive: the valid range; ``None`` means unbounded on that side.
        searchable: whether ``pbt.search_space`` may name it.
        doc: what it is (the field's description).
        prior: its dimension in the default search space (:func:`default_search_space`); ``None``: not searched by
            default.
        enabled_by: the dotted config key of the switch it belongs to (``agent.adversarial.enabled``); while that
            is off, the hyperparameter is carried but not in force (:meth:`in_force`). ``None``: always in force.
    """

    name: str
    path: str
    default: float
    low: Optional[float]
    low_inclusive: bool
    high: Optional[float]
    high_inclusive: bool
    searchable: bool
    doc: str
    prior: Optional[SearchDim] = None
    enabled_by: Optional[str] = None

    def interval(self) -> str:
        """The valid range in interval notation, e.g. ``(0.0, 1.0]``."""
        lo = "-inf" if self.low is None else f"{self.low}"
        hi = "inf" if self.high is None else f"{self.high}"
        return f"{'[' if self.low_inclusive else '('}{lo}, {hi}{']' if self.high_inclusive else ')'}"

    def contains(self, value: float) -> bool:
        """Whether the number ``value`` lies in the valid range (NaN never does)."""
        low_ok = self.low is None or value > self.low or (self.low_inclusive and value == self.low)
        high_ok = self.high is None or value < self.high or (self.high_inclusive and value == self.high)
        return bool(low_ok and high_ok) and not math.isnan(value)

    def check(self, value: Any, where: str) -> None:
        """Raise ``ValueError`` starting with ``where`` unless ``value`` is a finite number in the valid range."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: {value!r} is not a number")
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value!r} is not a finite number")
        if not self.contains(value):
            raise ValueError(f"{where}: {value!r} is outside its valid range {self.interval()}")

    def field(self) -> Any:
        """The pydantic field of :attr:`path`: this default, these bounds, this description."""
        bounds: dict[str, float] = {}
        if self.low is not None:
            bounds["ge" if self.low_inclusive else "gt"] = self.low
        if self.high is not None:
            bounds["le" if self.high_inclusive else "lt"] = self.high
        return Field(self.default, description=self.doc, **bounds)

    def get(self, cfg: "Config") -> float:
        """This hyperparameter's value in ``cfg`` (read at :attr:`path`)."""
        return _read(cfg, self.path)

    def in_force(self, cfg: "Config") -> bool:
        """Whether it acts in a run of ``cfg``: its switch (:attr:`enabled_by`) is on, or it has none."""
        return self.enabled_by is None or bool(_read(cfg, self.enabled_by))


def _read(cfg: "Config", path: str) -> Any:
    node: Any = cfg
    for part in path.split("."):
        node = getattr(node, part)
    return node


def _hp(name: str, default: float, low: Optional[float], high: Optional[float], doc: str, *,
        low_inclusive: bool = False, high_inclusive: bool = False, searchable: bool = True,
        prior: Optional[SearchDim] = None, enabled_by: Optional[str] = None) -> HParam:
    return HParam(name=name, path=f"agent.{name}", default=default, low=low, low_inclusive=low_inclusive, high=high,
                  high_inclusive=high_inclusive, searchable=searchable, doc=doc, prior=prior, enabled_by=enabled_by)


_SAPPO = "agent.adversarial.enabled"

#: Every per-member hyperparameter, in :func:`member_hparams` order. Ranges: ``(`` excludes, ``[`` includes a bound.
HPARAMS: tuple[HParam, ...] = (
    _hp("learning_rate", 1e-3, 0.0, None, "Adam step size",
        prior=SearchDim(type="float", low=1e-4, high=3e-3, scale="log")),
    _hp("ent_coef", 0.01, 0.0, None, "entropy bonus coefficient", low_inclusive=True,
        prior=SearchDim(type="float", low=1e-4, high=3e-2, scale="log")),
    _hp("clip_range", 0.2, 0.0, None, "clipped-surrogate epsilon",
        prior=SearchDim(type="float", low=0.1, high=0.3)),
    _hp("vf_coef", 0.5, 0.0, None, "value-loss coefficient", low_inclusive=True),
    _hp("gamma", 0.99, 0.0, 1.0, "discount", high_inclusive=True),
    _hp("gae_lambda", 0.95, 0.0, 1.0, "GAE(lambda)", low_inclusive=True, high_inclusive=True,
        prior=SearchDim(type="float", low=0.8, high=0.99)),
    _hp("max_grad_norm", 0.5, 0.0, None, "per-member gradient-norm clip"),
    _hp("adversarial.epsilon", 0.05, 0.0, None, "SA-PPO: final attack radius", low_inclusive=True,
        enabled_by=_SAPPO),
    _hp("adversarial.robust_kl_coef", 0.1, 0.0, None, "SA-PPO: robust KL regularizer coefficient",
        low_inclusive=True, enabled_by=_SAPPO),
    _hp("adversarial.ratio", 1.0, 0.0, 1.0, "SA-PPO: fraction of each minibatch attacked",
        low_inclusive=True, high_inclusive=True, enabled_by=_SAPPO),
)

HPARAMS_BY_NAME: dict[str, HParam] = {h.name: h for h in HPARAMS}

#: The per-member hyperparameter names, in :func:`member_hparams` order.
HPARAM_NAMES: tuple[str, ...] = tuple(h.name for h in HPARAMS)

#: The names ``pbt.search_space`` may use (``agent.<name>`` is accepted too).
SEARCHABLE: frozenset[str] = frozenset(h.name for h in HPARAMS if h.searchable)


def default_search_space() -> dict[str, SearchDim]:
    """The search space of a config that does not set ``pbt.search_space``: every :data:`HPARAMS` prior (copies)."""
    return {h.name: h.prior.model_copy(deep=True) for h in HPARAMS if h.prior is not None}


def _hp_field(name: str) -> Any:
    return HPARAMS_BY_NAME[name].field()


# --------------------------------------------------------------------------------------------------- env


class TradingDataConfig(_Strict):
    """Market data for ``env.id: trading``: a shipped series or the user's own CSV."""

    source: Literal["googl", "eurusd", "csv"] = "googl"
    path: Optional[str] = None  # CSV file when source == "csv" (or when given, implies csv)
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)  # train / validation / test fractions, chronological
    # strftime format of the CSV's timestamp column (e.g. "%d/%m/%Y"); null: inferred (ambiguous day/month refused);
    # with separate Date and Time columns (MetaTrader) the format of the Date column alone (e.g. "%Y.%m.%d")
    date_format: Optional[str] = None

    @model_validator(mode="after")
    def _check(self) -> "TradingDataConfig":
        if self.path is not None and self.source != "csv":
            object.__setattr__(self, "source", "csv")
        if self.source == "csv" and not self.path:
            raise ValueError("env.data.path is required when env.data.source is 'csv'")
        if self.date_format is not None:
            if self.source != "csv":
                raise ValueError(f"env.data.date_format applies to a CSV file (env.data.source: csv); the shipped "
                                 f"series {self.source!r} has its own format")
            if "%" not in self.date_format:
                raise ValueError(f"env.data.date_format must be a strftime format such as '%d/%m/%Y', got "
                                 f"{self.date_format!r}")
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

    ``id`` is a Gymnasium id (``CartPole-v1``), a POPGym id (``popgym-PositionOnlyCartPoleEasy-v0``), an id with the
    module that registers it (``my_package.envs:MyEnv-v0``: Gymnasium imports ``my_package.envs`` first) or
    ``trading`` for rpbt's market environment. ``entry_point`` (``my_package.envs:make_env``) names a callable that
    returns a Gymnasium environment instead; it is called with ``env.kwargs``, and ``id`` then only names the
    environment in messages and reports. ``num_envs`` is per member.

    :meth:`with_env_fn` attaches a callable itself (``rpbt.train(..., env_fn=...)``): it is carried with the config
    inside this process and when the config is pickled (to the process and Ray backends' workers), but not written
    to ``config.yaml``, which records the callable's ``entry_point``.
    """

    id: str = "popgym-PositionOnlyCartPoleEasy-v0"
    entry_point: Optional[str] = None
    num_envs: int = Field(8, ge=1)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    observation_noise_std: float = Field(0.0, ge=0.0)  # Gaussian noise added to observations (noisy POMDPs)
    data: TradingDataConfig = Field(default_factory=TradingDataConfig)
    trading: TradingConfig = Field(default_factory=TradingConfig)

    _env_fn: Optional[Callable[..., Any]] = PrivateAttr(default=None)

    @field_validator("kwargs")
    @classmethod
    def _finite_kwargs(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _plain_finite(v, "env.kwargs")

    @field_validator("entry_point")
    @classmethod
    def _module_colon_name(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and (v.count(":") != 1 or not all(v.split(":"))):
            raise ValueError(f"expected 'module:callable' (e.g. my_package.envs:make_env), got {v!r}")
        return v

    @model_validator(mode="after")
    def _not_trading(self) -> "EnvConfig":
        if self.entry_point is not None and self.id == "trading":
            raise ValueError("env.entry_point makes a custom environment; env.id 'trading' would name rpbt's market "
                             "environment (give env.id another name)")
        return self

    def with_env_fn(self, env_fn: Callable[..., Any]) -> "EnvConfig":
        """Attach ``env_fn`` (a callable returning a Gymnasium env, called with ``kwargs``); returns ``self``.

        Sets ``entry_point`` to where the callable can be imported from (``module:qualname``, recorded in
        ``config.yaml``; a lambda's or a nested function's cannot be imported later, and a later process then
        needs ``env_fn`` again). Raises ``TypeError`` when ``env_fn`` is not callable.
        """
        if not callable(env_fn):
            raise TypeError(f"env_fn must be a callable returning a gymnasium.Env, got {env_fn!r}")
        module, name = getattr(env_fn, "__module__", None), getattr(env_fn, "__qualname__", None)
        if module is None or name is None:  # a callable object (functools.partial, an instance): not by name
            module, name = type(env_fn).__module__, f"<{type(env_fn).__qualname__} object>"
        self.entry_point = f"{module}:{name}"
        self._env_fn = env_fn
        return self

    def env_fn(self) -> Optional[Callable[..., Any]]:
        """The callable that makes this environment: the one attached with :meth:`with_env_fn`, else the one
        ``entry_point`` names (imported), else None (``id`` is made with ``gymnasium.make``).

        Raises ``ValueError`` naming ``env.entry_point`` when it cannot be imported (a module that does not import,
        a missing or non-callable attribute, a lambda recorded by :meth:`with_env_fn`).
        """
        if self._env_fn is not None:
            return self._env_fn
        if self.entry_point is None:
            return None
        module, _, name = self.entry_point.partition(":")
        again = ("a callable given as env_fn that is not importable by reference (a lambda, a nested function, a "
                 "function of a script) must be given again: rpbt.resume(run_dir, env_fn=...), "
                 "rpbt.load_policy(run_dir, env_fn=...)")
        obj: Any = import_env_module(module, f"env.entry_point {self.entry_point!r} cannot be imported",
                                     also=f"; {again}")
        try:
            for part in name.split("."):
                obj = getattr(obj, part)
        except AttributeError as err:
            raise ValueError(f"env.entry_point {self.entry_point!r} cannot be imported ({err}); {again}") from None
        if not callable(obj):
            raise ValueError(f"env.entry_point {self.entry_point!r} is not callable")
        return obj


def import_env_module(module: str, where: str, also: str = "") -> types.ModuleType:
    """Import ``module``, the user's module that ``where`` names (``env.id 'my_envs:MyEnv-v0' cannot be made``,
    ``env.entry_point 'my_envs:make_env' cannot be imported``).

    Raises ``ValueError`` starting with ``where``, ending with ``also``: when ``module`` itself is not found, saying
    how to make it importable (an installed package, or its folder on ``PYTHONPATH``: the ``rpbt`` command is a
    console script, so Python searches its own folder, not the current directory; ``python -m`` and a script's
    folder are searched); when a module it imports is not installed, naming that module; for any other
    ``ImportError`` it raises. Other errors raised by its code propagate (a bug there shows its traceback).
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        missing = err.name or module
        if missing != module and not module.startswith(missing + "."):
            raise ValueError(f"{where}: module {module!r} imports {missing!r}, which is not installed ({err})"
                             f"{also}") from None
        raise ValueError(f"{where}: module {module!r} is not found; it must be importable by the Python that runs "
                         f"rpbt: install its package (pip install -e PROJECT_DIR) or put the folder holding it on "
                         f"PYTHONPATH (the rpbt command does not search the current directory: PYTHONPATH=. rpbt "
                         f"...){also}") from None
    except ImportError as err:
        raise ValueError(f"{where}: importing module {module!r} failed ({err}){also}") from None


def _plain_data(value: Any, where: str) -> Any:
    """``value`` as YAML's plain data (str, int, float, bool, None, lists, mappings with string keys): NumPy numbers
    and arrays become Python numbers and lists, tuples lists, and what pydantic's JSON mode can write (a path, a
    date, a set, an enum) its JSON form. Raises ``ValueError`` naming the dotted key of anything else (an object
    ``config.yaml`` could not record)."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):  # numpy scalars and arrays
        return _plain_data(value.tolist(), where)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: key {key!r} is a {type(key).__name__}, expected a string")
            out[key] = _plain_data(item, f"{where}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [_plain_data(item, f"{where}[{i}]") for i, item in enumerate(value)]
    try:  # pathlib.Path -> str, datetime.date -> ISO text, set -> list, ... (what config.yaml recorded before)
        jsonable = to_jsonable_python(value)
    except (PydanticSerializationError, TypeError, ValueError):
        jsonable = value
    if jsonable is not value and not isinstance(jsonable, type(value)):
        return _plain_data(jsonable, where)
    raise ValueError(f"{where}: {value!r} is a {type(value).__name__}; expected a number, string, bool, None, list or "
                     "mapping (config.yaml records it)")


def _plain_finite(v: dict[str, Any], key: str) -> dict[str, Any]:
    """Keyword arguments of ``key`` as plain YAML-able data (config.yaml records them) with every number finite."""
    v = _plain_data(v, key)
    _check_finite(v, key)
    return v


def _check_finite(value: Any, where: str) -> None:
    """Raise ``ValueError`` naming the dotted key of the first non-finite float nested in ``value``."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: {value!r} is not a finite number")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_finite(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_finite(item, f"{where}[{index}]")


# --------------------------------------------------------------------------------------------------- agent


class NetworkConfig(_Strict):
    """The actor's and each critic's network: an encoder, a recurrent cell, a head.

    ``encoder``: ``mlp`` (tanh layers of ``encoder_sizes``), ``cnn`` (a Nature-style CNN for Box image
    observations; ``encoder_kwargs``: ``channels`` first/last, detected when absent, ``features``, ``scale``) or
    ``module:factory``, a function ``factory(observation_space, **encoder_kwargs)`` returning one member's
    ``nn.Module`` (observation batch -> flat features), stacked across members (:mod:`rpbt.agent.encoders`).
    ``cell``: ``lstm`` or ``gru``, of ``lstm_hidden_size`` units and ``lstm_num_layers`` layers (both cells).
    ``prev_action`` / ``prev_reward`` add the previous action (one-hot for Discrete, concatenated one-hots for
    MultiDiscrete, the clipped action for Box) and the previous reward (raw) to the encoder's input (to a module
    encoder's output), zero at an episode's first step, as R2D2 (Kapturowski et al. 2019) and POPGym's baselines
    (Morad et al. 2023) do.
    """

    encoder: str = "mlp"
    encoder_kwargs: dict[str, Any] = Field(default_factory=dict)
    encoder_sizes: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [64])
    cell: Literal["lstm", "gru"] = "lstm"
    lstm_hidden_size: int = Field(64, ge=1)
    lstm_num_layers: int = Field(1, ge=1)
    log_std_init: float = 0.0
    prev_action: bool = False
    prev_reward: bool = False

    @field_validator("encoder")
    @classmethod
    def _encoder_name(cls, value: str) -> str:
        module, colon, name = value.partition(":")
        if value in ("mlp", "cnn") or (colon and module and name and ":" not in name):
            return value
        raise ValueError(f"agent.network.encoder: {value!r} is not mlp, cnn or 'module:factory'")

    @field_validator("encoder_kwargs")
    @classmethod
    def _plain_encoder_kwargs(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _plain_finite(v, "agent.network.encoder_kwargs")


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
    epsilon: float = _hp_field("adversarial.epsilon")
    epsilon_schedule: Literal["constant", "linear", "cosine"] = "constant"
    robust_kl_coef: float = _hp_field("adversarial.robust_kl_coef")
    ratio: float = _hp_field("adversarial.ratio")
    warmup: int = Field(0, ge=0)
    attack: Literal["pgd", "fgsm"] = "pgd"
    norm: Literal["linf", "l2"] = "linf"
    steps: int = Field(10, ge=1)
    step_size: Optional[float] = None  # default: 2.5 * epsilon / steps (Madry et al.)
    value_coef: float = Field(0.0, ge=0.0)


class AgentConfig(_Strict):
    """Recurrent PPO learner.

    The per-member hyperparameters (``learning_rate`` .. ``max_grad_norm`` and three of ``adversarial``) are the
    initial values of every member unless searched; their defaults and bounds come from :data:`HPARAMS`.
    """

    num_steps: int = Field(128, ge=1)  # rollout length per env
    num_minibatches: int = Field(4, ge=1)  # minibatches of whole sequences (or of segments with bptt_length)
    # Segment replay (truncated BPTT): training replays segments of this many steps, each from a stored state
    # (recorded while acting for the first epoch, refreshed under the current weights before each later one);
    # null replays every environment's whole rollout from its start. Must divide agent.num_steps. 16 is PufferLib's
    # bptt_horizon; why it is the default: the README's Benchmarks section.
    bptt_length: Optional[int] = Field(16, ge=1)
    # The LSTM recurrence in training replay as one autograd node with a hand-written backward (true), or the
    # autograd loop (false). Same gradients (tests/agent/test_networks.py). It pays with whole-rollout replay
    # (agent.bptt_length: null), not with segments; the measurements: docs/learner_speed.md.
    fused_lstm: bool = False
    update_epochs: int = Field(4, ge=1)
    learning_rate: float = _hp_field("learning_rate")
    ent_coef: float = _hp_field("ent_coef")
    clip_range: float = _hp_field("clip_range")
    clip_range_vf: Optional[float] = None
    vf_coef: float = _hp_field("vf_coef")
    gamma: float = _hp_field("gamma")
    gae_lambda: float = _hp_field("gae_lambda")
    max_grad_norm: float = _hp_field("max_grad_norm")
    adam_eps: float = Field(1e-5, gt=0.0)
    normalize_advantage: bool = True
    normalize_observations: bool = True
    obs_clip: float = Field(10.0, gt=0.0)  # normalized observations are clipped to [-obs_clip, obs_clip]
    # Raw observations are clipped to [-raw_obs_clip, raw_obs_clip] before the normalizer sees them (its running
    # statistics and normalization, in training, evaluation, predict and export), so a finite but absurd value (a
    # 1e30 spike) cannot drag the statistics away. null (default): off. No effect without normalize_observations.
    raw_obs_clip: Optional[float] = Field(None, gt=0.0)
    # Warn (once per member; counted in events.jsonl) when a finite raw observation component exceeds this many times
    # its typical magnitude in the rollout, max(median |x|, 1) (rpbt.agent.normalizer.find_obs_outliers): such a
    # value dominates the running variance, so the component's ordinary values all normalize to about one number.
    # Read-only: training is unchanged. null: no check. 1e4: ordinary environments stay under 10 (README, "Observation
    # outliers").
    obs_outlier_factor: Optional[float] = Field(1.0e4, gt=1.0)
    # Torch device of every learner tensor: auto (CUDA when available), cpu, cuda or cuda:N. Environments stay on the
    # CPU. A checkpoint is device-independent.
    device: str = "auto"
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    critic: CriticConfig = Field(default_factory=CriticConfig)
    vgs: VGSConfig = Field(default_factory=VGSConfig)
    adversarial: AdversarialConfig = Field(default_factory=AdversarialConfig)


# --------------------------------------------------------------------------------------------------- pbt


class PB2Config(_Strict):
    """PB2's Gaussian-process bandit (``pbt.explore: pb2``, see :mod:`rpbt.pbt.pb2`)."""

    max_data: int = Field(128, ge=4)  # most recent (interval, member) observations the GP is fitted on
    min_data: int = Field(4, ge=2)  # fewer observations than this: explore by perturb instead (the first rounds)
    candidates: int = Field(512, ge=1)  # random points the acquisition is scored on before L-BFGS-B polishes the best


_FLOAT = TypeAdapter(float)


def _numeric_categorical(dim: SearchDim, hparam: HParam, where: str) -> SearchDim:
    """The categorical ``dim`` of the numeric ``hparam`` with every string that reads as a number made that number,
    as pydantic reads ``low`` / ``high`` (YAML 1.1 reads ``1e-4``, without a dot, as a string).

    Raises ``ValueError`` starting with ``where`` for a value that is not a number (a string that does not read as
    one, a boolean), not finite or outside the hyperparameter's valid range, and for two values that are the same
    number (``1e-4`` and ``0.0001``).
    """
    values = list(dim.values or [])
    numbers: list[Any] = []
    for value in values:
        if isinstance(value, str):
            try:
                value = _FLOAT.validate_python(value)
            except ValidationError:
                pass  # not a number: named by check below
        hparam.check(value, where)
        numbers.append(value)
    if all(type(a) is type(b) for a, b in zip(numbers, values)):
        return dim
    try:
        return SearchDim.model_validate({**dim.model_dump(), "values": numbers})
    except ValidationError as err:  # two values became the same number
        raise ValueError(f"{where}: " + "; ".join(e["msg"].removeprefix("Value error, ")
                                                  for e in err.errors())) from None


class PBTConfig(_Strict):
    """Population-Based Training (Jaderberg et al. 2017)."""

    # Members. At least 2: exploit copies one member into another, so a population of one would never change.
    population_size: int = 8
    perturbation_interval: int = Field(5, ge=1)  # updates between ready checks
    burn_in: int = Field(5, ge=0)  # updates before a member is first ready
    exploit: Literal["truncation", "tournament"] = "truncation"
    quantile_fraction: float = Field(0.25, gt=0.0, le=0.5)
    # Significance test on top of exploit (Jaderberg et al. 2017, "T-test selection"): a recipient copies its donor
    # only when the donor's last ttest_window episode returns are better than the recipient's by a one-sided
    # Welch's t-test at level ttest_alpha; a member with fewer than ttest_window returns is never tested (no copy).
    # With exploit: tournament this is the paper's T-test selection. See rpbt.pbt.scheduler.
    ttest: bool = False
    ttest_alpha: float = Field(0.05, gt=0.0, lt=1.0)
    ttest_window: Optional[int] = Field(None, ge=2)  # K returns per side; null: score_window
    # How a recipient's hyperparameters are explored: "perturb" (PBT: x 0.8 / 1.2, or resample) or "pb2"
    # (Parker-Holder et al. 2020: a time-varying GP bandit on the score change per interval; rpbt.pbt.pb2).
    explore: Literal["perturb", "pb2"] = "perturb"
    pb2: PB2Config = Field(default_factory=PB2Config)
    resample_probability: float = Field(0.25, ge=0.0, le=1.0)
    perturb_factors: tuple[float, float] = (0.8, 1.2)
    score: Literal["mean", "cvar"] = "mean"
    score_window: int = Field(20, ge=1)  # K: last finished episodes in the score
    score_cvar_alpha: float = Field(0.1, gt=0.0, le=1.0)
    # Score a member on the episodes it finished since its last exploit only (the recipient inherits the donor's
    # recent returns with its member state). A member with fewer than score_window such episodes takes no part in
    # exploit (neither donor nor recipient) until it has them. On, it changes the decisions after the first exploit.
    score_since_exploit: bool = False
    # Which returns the score is computed from: "training" = the member's last score_window finished training
    # episodes; "validation" = env.trading.eval_episodes deterministic episodes on the validation split, run by
    # the runner after each round (trading only: selection must not reward overfitting the training period);
    # "auto" = validation for env.id trading, training otherwise. "evaluation" (any environment): each round every
    # ready member plays evaluation_episodes deterministic episodes on held-out env seeds (never a training seed,
    # rpbt.seeding.heldout_episode_seeds), and their mean (or CVaR) is its score; the cost is reported.
    score_source: Literal["auto", "training", "validation", "evaluation"] = "auto"
    evaluation_episodes: int = Field(10, ge=1)  # per ready member per round, with score_source: evaluation
    mode: Literal["max", "min"] = "max"
    optimizer_state: Literal["copy", "reset"] = "copy"
    hidden_state: Literal["keep", "zero", "reset_episodes", "burn_in"] = "burn_in"
    # What an exploit moves. "whole_state": the donor's whole member state (weights, optimizer moments and step,
    # observation/return normalizer statistics, VGS statistics, counters, recent returns, RNG, then forked).
    # "weights_only" is an ablation setting, not a recommendation (benchmarks/exploit_ablation.py): only the network
    # weights move, as a load_state_dict of the policy's weights does; the recipient keeps its own normalizer
    # statistics, optimizer state, VGS statistics, counters, recent returns and RNG. Either way the explored
    # hyperparameters are applied on top, then optimizer_state and hidden_state (burn-in then normalizes with the
    # recipient's own statistics).
    transfer: Literal["whole_state", "weights_only"] = "whole_state"
    burn_in_max_steps: int = Field(512, ge=1, le=100_000)  # history kept per environment
    # Searched hyperparameters (names of HPARAMS, `agent.` prefix optional). Left out: default_search_space(), the
    # priors of HPARAMS. Given: it replaces the default whole. Empty: an error (PBT would have nothing to explore).
    # A dotted override pbt.search_space.NAME={...} changes or adds one dimension of the space in force (the given
    # one, else the default), pbt.search_space.NAME.FIELD=... one field of it; one that changes a dimension's type
    # starts it afresh from what the overrides give (see DottedSetter).
    # Every hyperparameter is a number: a categorical's string values that read as numbers (YAML 1.1 reads 1e-4 as a
    # string) are those numbers, as for low / high; any other string is an error.
    search_space: dict[str, SearchDim] = Field(default_factory=default_search_space)

    @field_validator("population_size")
    @classmethod
    def _at_least_two(cls, v: int) -> int:
        if v < 2:
            raise ValueError("PBT needs at least two members (exploit copies one member into another)")
        return v

    @field_validator("search_space", mode="before")
    @classmethod
    def _not_empty(cls, v: Any) -> Any:
        if v is None or (isinstance(v, dict) and not v):
            raise ValueError(
                f"expected at least one searched hyperparameter: PBT would have nothing to explore. Name "
                f"some of {sorted(SEARCHABLE)}, or leave pbt.search_space out for the default search space "
                f"({', '.join(default_search_space())})")
        return v

    @field_validator("search_space")
    @classmethod
    def _known(cls, v: dict[str, SearchDim]) -> dict[str, SearchDim]:
        space: dict[str, SearchDim] = {}
        for key, dim in v.items():
            name = key.removeprefix("agent.")
            hparam = HPARAMS_BY_NAME.get(name)
            if hparam is None or not hparam.searchable:
                raise ValueError(f"unknown hyperparameter {key!r}; searchable: {sorted(SEARCHABLE)}")
            if name in space:
                raise ValueError(f"{name!r} is searched twice (as {name!r} and as 'agent.{name}'); keep one")
            if dim.type == "categorical":
                dim = _numeric_categorical(dim, hparam, f"search space of {key}")
            else:
                for value in (dim.low, dim.high):
                    hparam.check(value, f"search space of {key}")
            space[name] = dim
        return space

    @field_validator("perturb_factors")
    @classmethod
    def _positive_factors(cls, v: tuple[float, float]) -> tuple[float, float]:
        if any(f <= 0 for f in v):
            raise ValueError(f"perturb factors must be positive, got {v}")
        return v


# --------------------------------------------------------------------------------------------------- run


class RunConfig(_Strict):
    total_env_steps: int = Field(150_000, ge=1)  # per member
    # Every derived seed comes from it through numpy's SeedSequence (rpbt.seeding), which takes no negative entropy.
    seed: int = Field(0, ge=0)
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
    # Where member checkpoints go: null = RUN_DIR/checkpoints; else a path or fsspec URL (file:///mnt/nfs/rpbt,
    # s3://bucket/prefix: its fsspec package installed) under which <run dir name>/round_<r>/ are written, by the
    # shards themselves on the process and Ray backends. The commit point stays in RUN_DIR/checkpoints/runner.json.
    storage: Optional[str] = None
    # Stop the run cleanly once the best member's PBT score reaches this (<= with pbt.mode: min), after the round
    # that reached it is committed (rpbt.callbacks.StopAtScore); `rpbt resume RUN run.stop_at_score=null` goes on.
    stop_at_score: Optional[float] = Field(None, allow_inf_nan=False)


class BackendConfig(_Strict):
    # auto: process (one worker per usable CPU, capped at the population) on a multi-core CPU run, else local; see
    # rpbt.pbt.backends.resolve_kind. Same config and seed, same decisions on every backend.
    kind: Literal["auto", "local", "process", "ray"] = "auto"
    num_workers: Optional[int] = None  # process/ray: shards; default CPU count
    address: Optional[str] = None  # ray: join an existing cluster
    num_cpus_per_shard: float = Field(1.0, gt=0.0)
    # ray: GPUs reserved per shard (fractions share a GPU, as in Ray); the shard's learner runs on the GPU Ray gives
    # it (agent.device auto or cuda). 0: the shards run on the CPU.
    num_gpus_per_shard: float = Field(0.0, ge=0.0)
    # ray: the runtime_env of every shard's actor (working_dir, py_modules, pip, env_vars: Ray's own keys), e.g. to
    # ship a custom environment's module to the nodes.
    runtime_env: Optional[dict[str, Any]] = None
    # ray: spread puts the shards on as many nodes as possible (Ray's SPREAD strategy); pack leaves placement to
    # Ray's default policy, which fills a node before the next.
    placement: Literal["spread", "pack"] = "spread"
    # ray: false refuses, within seconds and with the numbers, a cluster whose nodes cannot hold the shards; true
    # waits (up to 600 s) for resources to appear, e.g. nodes added by an autoscaler.
    wait_for_resources: bool = False
    max_failures: int = Field(3, ge=0)


class Config(_Strict):
    """A whole run: ``env``, ``agent``, ``pbt``, ``run`` and ``backend`` sections."""

    env: EnvConfig = Field(default_factory=EnvConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    pbt: PBTConfig = Field(default_factory=PBTConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    backend: BackendConfig = Field(default_factory=BackendConfig)

    @model_validator(mode="after")
    def _cross_field_rules(self) -> "Config":
        """Every rule of :mod:`rpbt.config.rules` (keys of more than one section), in this order."""
        env, agent, pbt = self.env, self.agent, self.pbt
        rules.minibatches_divide_the_rollout(env.num_envs, agent.num_steps, agent.bptt_length, agent.num_minibatches)
        rules.validation_score_needs_trading(pbt.score_source, env.id)
        rules.pb2_min_data_at_most_max_data(pbt.explore, pbt.pb2.min_data, pbt.pb2.max_data)
        rules.ttest_window_fits_the_returns(pbt.ttest, pbt.ttest_window, pbt.score_window,
                                            rules.resolve_score_source(pbt.score_source, env.id),
                                            env.trading.eval_episodes, pbt.evaluation_episodes)
        rules.workers_fit_the_population(self.backend.num_workers, pbt.population_size)
        rules.ray_options_need_ray(self.backend.kind, self.backend.num_gpus_per_shard, self.backend.runtime_env)
        rules.gpus_per_shard_need_a_cuda_device(self.backend.num_gpus_per_shard, agent.device)
        rules.ray_shards_reserve_the_gpu_they_use(self.backend.kind, self.backend.num_gpus_per_shard, agent.device)
        return self

    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration as plain YAML-able data, every default filled in."""
        return self.model_dump(mode="json")


# --------------------------------------------------------------------------------------------------- per member


def member_hparams(cfg: Config) -> dict[str, float]:
    """The initial value of every per-member hyperparameter in ``cfg``: :data:`HPARAM_NAMES` in order."""
    return {h.name: h.get(cfg) for h in HPARAMS}


def hparams_in_force(cfg: Config, hparams: dict[str, Any]) -> dict[str, Any]:
    """``hparams`` (a member's, by name) without those not in force in a run of ``cfg`` (:meth:`HParam.in_force`:
    the SA-PPO ones while ``agent.adversarial.enabled`` is off); names outside :data:`HPARAMS` are kept."""
    return {k: v for k, v in hparams.items() if k not in HPARAMS_BY_NAME or HPARAMS_BY_NAME[k].in_force(cfg)}
