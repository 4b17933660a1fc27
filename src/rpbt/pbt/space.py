"""The PBT search space: which hyperparameters are searched, their priors, and how they are explored.

Population-Based Training (Jaderberg et al. 2017, "Population Based Training of Neural Networks",
arXiv 1711.09846) explores after an exploit in one of two ways, per hyperparameter:

* **perturb**: move the copied value a little. A float is multiplied by a factor chosen uniformly from
  ``factors`` (0.8 or 1.2 by default, as in the paper); an integer steps to a neighbour (-1 or +1); a categorical
  value steps to a neighbouring entry of its ``values`` list (index -1 or +1). The result is clipped to the bounds
  (the list ends for a categorical), so at a bound the value stays put with probability 1/2.
* **resample**: with probability ``resample_probability``, draw a fresh value from the prior instead.

Priors: uniform on ``[low, high]`` for a linear float, log-uniform for a log float, uniform over the integers
``low..high`` (both inclusive) for an int, uniform over ``values`` for a categorical.

Determinism: every method that draws numbers takes a :class:`random.Random` and visits the dimensions in sorted
name order, so the results depend only on the generator's state and the inputs, never on dict insertion order.

Errors: a bad definition raises :class:`ValueError` naming the dimension. What a valid dimension is (bounds with
``high > low``, integral for an int, ``low > 0`` for a log scale, finite; at least two distinct categorical
``values``) is decided once, by :class:`rpbt.config.SearchDim`, which every dimension is validated as. A value
that cannot be explored or clipped (non-numeric or non-finite for a numeric dimension, not in ``values`` for a
categorical, a searched name missing from the values) also raises :class:`ValueError` naming it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

from pydantic import ValidationError

from rpbt.config import SearchDim

__all__ = ["SearchSpace", "DEFAULT_PERTURB_FACTORS"]

#: Jaderberg et al. 2017 perturb a continuous hyperparameter by a factor of 0.8 or 1.2.
DEFAULT_PERTURB_FACTORS: tuple[float, float] = (0.8, 1.2)

Value = Union[float, int, str, bool]


@dataclass(frozen=True)
class _Dimension:
    """A validated dimension (internal; built by :class:`SearchSpace`)."""

    name: str
    type: str  # "float" | "int" | "categorical"
    low: Optional[Union[float, int]] = None
    high: Optional[Union[float, int]] = None
    scale: str = "linear"  # "linear" | "log" (meaningful for floats only)
    values: Optional[tuple[Value, ...]] = None

    # ------------------------------------------------------------------ prior

    def sample(self, rng: random.Random) -> Value:
        if self.type == "categorical":
            assert self.values is not None
            return self.values[rng.randrange(len(self.values))]
        if self.type == "int":
            return rng.randint(int(self.low), int(self.high))
        if self.scale == "log":
            # exp(log x) may land an ulp outside the bounds: clip back.
            return self.clip_number(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return self.clip_number(rng.uniform(self.low, self.high))

    # ------------------------------------------------------------------ perturb

    def perturb(self, value: Any, rng: random.Random, factors: Sequence[float]) -> Value:
        if self.type == "categorical":
            assert self.values is not None
            index = self.index_of(value)
            step = -1 if rng.random() < 0.5 else 1
            return self.values[min(max(index + step, 0), len(self.values) - 1)]
        number = self.check_number(value)
        if self.type == "int":
            step = -1 if rng.random() < 0.5 else 1
            return self.clip_number(round(number) + step)
        factor = factors[rng.randrange(len(factors))]
        return self.clip_number(number * factor)

    # ------------------------------------------------------------------ unit cube (PB2's GP inputs)

    def _unit_bounds(self) -> tuple[float, float]:
        if self.scale == "log":
            return math.log(self.low), math.log(self.high)
        return float(self.low), float(self.high)

    def to_unit(self, value: Any) -> float:
        number = self.check_number(value)
        lo, hi = self._unit_bounds()
        x = math.log(number) if self.scale == "log" and number > 0 else (lo if self.scale == "log" else number)
        return min(max((x - lo) / (hi - lo), 0.0), 1.0)

    def from_unit(self, u: float) -> Union[float, int]:
        u = float(u)
        if u <= 0.0 or u >= 1.0:  # the bounds exactly (exp(log(low)) can miss low by an ulp)
            return self.clip_number(self.low if u <= 0.0 else self.high)
        lo, hi = self._unit_bounds()
        x = lo + u * (hi - lo)
        return self.clip_number(math.exp(x) if self.scale == "log" else x)

    # ------------------------------------------------------------------ clip

    def clip(self, value: Any) -> Value:
        if self.type == "categorical":
            return self.values[self.index_of(value)]  # validates membership
        return self.clip_number(self.check_number(value))

    def clip_number(self, number: float) -> Union[float, int]:
        if self.type == "int":
            return int(min(max(round(number), self.low), self.high))
        return float(min(max(number, self.low), self.high))

    def check_number(self, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"search dimension {self.name!r}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"search dimension {self.name!r}: cannot explore a non-finite value {value!r}")
        return float(value)

    def index_of(self, value: Any) -> int:
        assert self.values is not None
        # Prefer an exact type match so that True does not match 1 (or 1 match 1.0) when both are listed.
        for index, candidate in enumerate(self.values):
            if type(candidate) is type(value) and candidate == value:
                return index
        for index, candidate in enumerate(self.values):
            if candidate == value:
                return index
        raise ValueError(f"search dimension {self.name!r}: {value!r} is not one of {list(self.values)}")

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "low": self.low,
            "high": self.high,
            "scale": self.scale,
            "values": list(self.values) if self.values is not None else None,
        }


def _build_dimension(name: Any, spec: Union[SearchDim, Mapping[str, Any]]) -> _Dimension:
    if not isinstance(name, str) or not name:
        raise ValueError(f"search dimension names must be non-empty strings, got {name!r}")
    if isinstance(spec, SearchDim):
        dim = spec
    elif isinstance(spec, Mapping):
        try:
            dim = SearchDim.model_validate(dict(spec))
        except ValidationError as err:
            problems = "; ".join(
                (".".join(str(p) for p in e["loc"]) + ": " if e["loc"] else "") + e["msg"].removeprefix("Value error, ")
                for e in err.errors()
            )
            raise ValueError(f"search dimension {name!r}: {problems}") from None
    else:
        raise ValueError(f"search dimension {name!r}: expected a SearchDim or a mapping, got {type(spec).__name__}")

    # SearchDim has checked everything a dimension needs (see its docstring); here it only takes its final form.
    if dim.type == "categorical":
        return _Dimension(name=name, type="categorical", values=tuple(dim.values or ()), scale=dim.scale)
    if dim.type == "int":
        return _Dimension(name=name, type="int", low=int(dim.low), high=int(dim.high), scale="linear")
    return _Dimension(name=name, type="float", low=float(dim.low), high=float(dim.high), scale=dim.scale)


def check_factors(factors: Sequence[float]) -> tuple[float, ...]:
    """Validate perturbation factors: a non-empty sequence of positive finite numbers (else ``ValueError``)."""
    try:
        result = tuple(float(f) for f in factors)
    except (TypeError, ValueError):
        raise ValueError(f"perturb factors must be a sequence of numbers, got {factors!r}") from None
    if not result or not all(math.isfinite(f) and f > 0 for f in result):
        raise ValueError(f"perturb factors must be a non-empty sequence of positive finite numbers, got {factors!r}")
    return result


def check_probability(p: float, what: str = "resample_probability") -> float:
    """Validate a probability in [0, 1] (else ``ValueError``)."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not (0.0 <= p <= 1.0):
        raise ValueError(f"{what} must be a number in [0, 1], got {p!r}")
    return float(p)


class SearchSpace:
    """The searched hyperparameters, built from ``{name: SearchDim}`` (or plain dicts with the same keys).

    ``SearchSpace(pbt_config.search_space)`` is the usual construction; ``SearchSpace(space.to_json())`` rebuilds
    an equal space from its JSON description. Dimensions are kept in sorted name order (:attr:`names`).

    Raises ``ValueError`` naming the dimension for a bad definition (see the module docstring).
    """

    def __init__(self, dimensions: Optional[Mapping[str, Union[SearchDim, Mapping[str, Any]]]] = None) -> None:
        dimensions = dimensions or {}
        if not isinstance(dimensions, Mapping):
            raise ValueError(f"a search space is a mapping name -> dimension, got {type(dimensions).__name__}")
        built = [_build_dimension(name, spec) for name, spec in dimensions.items()]
        self._dims: dict[str, _Dimension] = {d.name: d for d in sorted(built, key=lambda d: d.name)}

    # ------------------------------------------------------------------ description

    @property
    def names(self) -> tuple[str, ...]:
        """The searched hyperparameter names, sorted."""
        return tuple(self._dims)

    def __contains__(self, name: object) -> bool:
        return name in self._dims

    def __len__(self) -> int:
        return len(self._dims)

    def __iter__(self):
        return iter(self._dims)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SearchSpace) and self._dims == other._dims

    def __repr__(self) -> str:
        return f"SearchSpace({self.to_json()!r})"

    def _dim(self, name: str) -> _Dimension:
        try:
            return self._dims[name]
        except KeyError:
            raise KeyError(f"{name!r} is not a searched hyperparameter; searched: {list(self._dims)}") from None

    def is_log(self, name: str) -> bool:
        """Whether ``name`` is a log-scale float dimension (``KeyError`` if it is not searched)."""
        dim = self._dim(name)
        return dim.type == "float" and dim.scale == "log"

    def type_of(self, name: str) -> str:
        """``"float"``, ``"int"`` or ``"categorical"`` (``KeyError`` if ``name`` is not searched)."""
        return self._dim(name).type

    @property
    def numeric_names(self) -> tuple[str, ...]:
        """The searched float and int names, sorted (the dimensions PB2 models; categoricals are left out)."""
        return tuple(name for name, dim in self._dims.items() if dim.type != "categorical")

    def to_unit(self, values: Mapping[str, Any], names: Optional[Sequence[str]] = None) -> list[float]:
        """Numeric values mapped into [0, 1]: ``(x - low) / (high - low)``, in ``log x`` for a log-scale float.

        ``names`` defaults to :attr:`numeric_names`; the result follows its order. Values outside the bounds map to
        0 or 1. Raises ``KeyError`` for a name that is not searched, ``ValueError`` for a categorical name or a value
        that is not a finite number.
        """
        out = []
        for name in self.numeric_names if names is None else names:
            dim = self._dim(name)
            if dim.type == "categorical":
                raise ValueError(f"search dimension {name!r} is categorical: it has no place in the unit cube")
            if name not in values:
                raise ValueError(f"searched hyperparameter {name!r} is missing from the values")
            out.append(dim.to_unit(values[name]))
        return out

    def from_unit(self, units: Sequence[float], names: Optional[Sequence[str]] = None) -> dict[str, Union[float, int]]:
        """Inverse of :meth:`to_unit`: ``{name: value}``; u is clipped to [0, 1], an int rounded to the nearest
        integer, the result clipped to the bounds. Raises ``ValueError`` when the lengths differ."""
        names = self.numeric_names if names is None else tuple(names)
        if len(units) != len(names):
            raise ValueError(f"expected {len(names)} unit values (for {list(names)}), got {len(units)}")
        out: dict[str, Union[float, int]] = {}
        for name, u in zip(names, units):
            dim = self._dim(name)
            if dim.type == "categorical":
                raise ValueError(f"search dimension {name!r} is categorical: it has no place in the unit cube")
            out[name] = dim.from_unit(u)
        return out

    def to_json(self) -> dict[str, dict[str, Any]]:
        """``{name: {"type", "low", "high", "scale", "values"}}`` in sorted name order (JSON-able)."""
        return {name: dim.to_json() for name, dim in self._dims.items()}

    # ------------------------------------------------------------------ sample / clip / perturb

    def sample(self, rng: random.Random) -> dict[str, Value]:
        """One draw from the prior of every dimension (visited in sorted name order)."""
        return {name: dim.sample(rng) for name, dim in self._dims.items()}

    def clip(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of ``values`` with every searched value clipped into its dimension.

        Floats are clipped to ``[low, high]``; ints are rounded to the nearest integer then clipped; categorical
        values must be one of ``values`` (``ValueError`` otherwise). Names absent from the space pass through;
        searched names absent from ``values`` are simply absent from the result.
        """
        result = dict(values)
        for name, dim in self._dims.items():
            if name in result:
                result[name] = dim.clip(result[name])
        return result

    def perturb(
        self,
        values: Mapping[str, Any],
        rng: random.Random,
        factors: Sequence[float] = DEFAULT_PERTURB_FACTORS,
        resample_probability: float = 0.25,
        names: Optional[Sequence[str]] = None,
    ) -> tuple[dict[str, Any], list[str]]:
        """Explore: a perturbed copy of ``values`` and the (sorted) names that were resampled.

        For every searched dimension (only those in ``names`` when given), in sorted name order: draw
        ``u = rng.random()``; if ``u < resample_probability`` the value is resampled from the prior, else it is
        perturbed (float: times a factor chosen uniformly from ``factors``; int: +-1; categorical: neighbouring
        index +-1; then clipped). Names in ``values`` that are not explored pass through unchanged.

        Raises ``ValueError`` when a searched name is missing from ``values``, when a value cannot be perturbed
        (see the module docstring), or for bad ``factors`` / ``resample_probability``.
        """
        factors = check_factors(factors)
        resample_probability = check_probability(resample_probability)
        result = dict(values)
        resampled: list[str] = []
        chosen = None if names is None else set(names)
        for name, dim in self._dims.items():
            if chosen is not None and name not in chosen:
                continue
            if name not in result:
                raise ValueError(f"cannot perturb: searched hyperparameter {name!r} is missing from the values")
            if rng.random() < resample_probability:
                result[name] = dim.sample(rng)
                resampled.append(name)
            else:
                result[name] = dim.perturb(result[name], rng, factors)
        return result, resampled
