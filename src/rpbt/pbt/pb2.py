"""PB2's explore: a time-varying Gaussian-process bandit chooses a recipient's new hyperparameters.

Population-Based Bandits (Parker-Holder, Nguyen and Roberts, NeurIPS 2020, "Provably Efficient Online
Hyperparameter Optimization with Population-Based Bandits", arXiv 2002.02518) keep PBT's exploit and replace its
random explore with a GP-bandit step. This module is that step, pure (numpy, scipy, scikit-learn; no torch, no I/O)
and seeded: :class:`rpbt.pbt.scheduler.PBTScheduler` owns one :class:`PB2Explorer` when ``pbt.explore: pb2``.

Data. Every scheduler step reports each member's score ``s`` (made "larger is better": negated for ``mode: min``),
its update count ``u`` and the hyperparameters ``x`` it trained with since the previous step. Member m contributes
one observation per interval::

    t = u_prev / perturbation_interval         (the interval's start, in intervals)
    r = s_prev                                   (the score the interval started from)
    y = (s - s_prev) / ((u - u_prev) / perturbation_interval)   (score change per interval)

where ``(u_prev, s_prev, x)`` was recorded at the previous step *after* its decisions: a recipient starts its next
interval from its donor's score with the explored ``x`` (Ray Tune's PB2 adds the same row). Pairs with a missing
score give no observation. Only the last ``max_data`` observations are kept (Ray Tune keeps 1000, then picks a
shorter window by likelihood once it has more than 200; rpbt keeps a fixed window).

Model. Inputs are ``(t, r01, x01)``: ``r01`` is ``r`` min-max scaled over the data, ``x01`` the searched numeric
hyperparameters in the unit cube (:meth:`rpbt.pbt.space.SearchSpace.to_unit`: log-scale dimensions in ``log x``,
integers as numbers). Targets ``y`` are standardized and clipped to [-2, 2] (as Ray Tune). The kernel is the
time-varying squared exponential of Bogunovic et al. 2016 (TV-GP-UCB), which the paper uses::

    k((t, z), (t', z')) = c * (1 - eps) ** (|t - t'| / 2) * exp(-sum_i (z_i - z'_i)**2 / (2 l_i**2)) + noise

(:class:`TimeVaryingRBF` times a constant, plus a white-noise term), fitted by maximum marginal likelihood with
scikit-learn's :class:`~sklearn.gaussian_process.GaussianProcessRegressor`: ``eps`` in [1e-3, 0.5] (old data is
forgotten at rate ``(1 - eps) ** 0.5`` per interval), one length scale per input (ARD) in [0.05, 10]. Each step's
fit starts from the previous step's hyperparameters plus one seeded random restart (L-BFGS-B, at most 100
iterations each). Cost, measured on a busy 2-core machine: 0.1-0.35 CPU s per step with up to 128 observations
(the default ``max_data``) in ``benchmarks/pbt_variants.py``, whatever the round's length.

Acquisition. For each recipient, in recipient order, the UCB ``mu(z) + kappa * sigma_B(z)`` is maximized over the
unit cube at the recipient's context ``(t_now, r01 of its donor's score)``, with ``kappa = sqrt(0.2 * max(1,
log(0.4 n)))`` for ``n`` observations (Ray Tune's c1 = 0.2, c2 = 0.4; the floor keeps it defined below n = 7).
``mu`` is the GP mean; ``sigma_B`` the standard deviation of the latent function under the same fitted kernel
with the *batch* added as pseudo-observations: every member that keeps its hyperparameters (at its own context)
and every recipient placed before this one (at its donor's context). A GP's variance depends only on where it has
data, so this is GP-BUCB (Desautels et al. 2014), the paper's batch rule: members are not sent to the same place.
The maximum is searched by scoring ``candidates`` uniform points plus the donor's own ``x`` and the best observed
ones, then polishing the two best with scipy's L-BFGS-B. Integers are rounded afterwards.

Same as the paper and Ray Tune: exploit is PBT's (truncation or tournament); the reward change per interval is the
target; time-varying SE kernel; UCB with a GP-BUCB batch; hyperparameters modelled inside their bounds. Different
from Ray Tune's ``pb2.py`` / ``pb2_utils.py``:

* log-scale dimensions are modelled in ``log x`` (Ray Tune scales every bound linearly);
* time is measured in intervals, not min-max scaled to [0, 1] (so ``eps`` means forgetting per interval, as in
  TV-GP-UCB; Ray Tune's scaling makes all its data at most one time unit apart);
* the UCB uses the standard deviation of the latent function (Ray Tune adds ``kappa`` times the predictive
  *variance*), and the batch GP keeps the fitted kernel (Ray Tune refits it on the padded data);
* one length scale per input instead of one shared;
* the batch includes the members that keep their hyperparameters, not only this round's earlier recipients;
* everything is seeded: the scheduler's generator seeds the fit restarts and the candidates (Ray Tune's starts
  come from the global ``np.random``).

Categorical dimensions are not modelled (PB2-Mix's bandit over categories is not implemented): after the GP has
chosen the numeric values, they are perturbed as PBT does (neighbour or resample, :meth:`SearchSpace.perturb`).
While fewer than ``min_data`` observations exist (the first rounds), the whole explore is PBT's perturb.

Errors: ``ValueError`` for invalid arguments or a malformed state dict.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from scipy.optimize import minimize
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Hyperparameter, Kernel, WhiteKernel
from threadpoolctl import threadpool_limits

from rpbt.pbt.space import SearchSpace

__all__ = ["PB2Explorer", "TimeVaryingRBF", "ucb_kappa"]

EPSILON_BOUNDS = (1e-3, 0.5)
LENGTH_SCALE_BOUNDS = (0.05, 10.0)
UCB_C1, UCB_C2 = 0.2, 0.4  # Ray Tune's constants of beta_t = c1 * log(c2 * n)
POLISH = 2  # best candidates polished with L-BFGS-B
FIT_MAXITER = 100  # L-BFGS-B iterations per marginal-likelihood optimization
ACQ_MAXITER = 30  # L-BFGS-B iterations per acquisition polish


def ucb_kappa(n: int) -> float:
    """UCB's ``kappa = sqrt(beta_n)``, ``beta_n = 0.2 * max(1, log(0.4 n))`` for ``n`` observations."""
    return math.sqrt(UCB_C1 * max(1.0, math.log(max(UCB_C2 * n, 1e-12))))


class TimeVaryingRBF(Kernel):
    """``(1 - eps) ** (|t - t'| / 2) * exp(-sum_i (z_i - z'_i)**2 / (2 l_i**2))`` on inputs ``(t, z_1..z_d)``.

    Column 0 is time (Bogunovic et al. 2016, TV-GP-UCB, as PB2 uses it); the remaining ``d`` columns get an
    anisotropic squared exponential. ``length_scale``: one per non-time column (a sequence of ``d`` positive
    floats). Hyperparameters ``epsilon`` and ``length_scale`` are optimized in log space by scikit-learn, within
    ``epsilon_bounds`` / ``length_scale_bounds``. ``K(X, Y)`` has shape (n_X, n_Y); with ``eval_gradient`` the
    gradient with respect to (log epsilon, log l_1..l_d) is (n_X, n_X, 1 + d).
    """

    def __init__(self, epsilon: float = 0.1, length_scale: Sequence[float] = (1.0,),
                 epsilon_bounds: tuple[float, float] = EPSILON_BOUNDS,
                 length_scale_bounds: tuple[float, float] = LENGTH_SCALE_BOUNDS) -> None:
        self.epsilon = epsilon
        self.length_scale = length_scale
        self.epsilon_bounds = epsilon_bounds
        self.length_scale_bounds = length_scale_bounds

    @property
    def hyperparameter_epsilon(self) -> Hyperparameter:
        return Hyperparameter("epsilon", "numeric", self.epsilon_bounds)

    @property
    def hyperparameter_length_scale(self) -> Hyperparameter:
        n = len(np.atleast_1d(self.length_scale))
        return Hyperparameter("length_scale", "numeric", self.length_scale_bounds, n)

    def __call__(self, X, Y=None, eval_gradient=False):
        X = np.atleast_2d(X)
        ls = np.asarray(self.length_scale, dtype=float).reshape(-1)
        if X.shape[1] != 1 + ls.size:
            raise ValueError(f"TimeVaryingRBF: inputs have {X.shape[1]} columns, expected 1 + {ls.size}")
        if eval_gradient and Y is not None:
            raise ValueError("gradient can only be evaluated when Y is None")
        Yv = X if Y is None else np.atleast_2d(Y)
        half_dt = np.abs(X[:, :1] - Yv[:, :1].T) / 2.0  # (n, m)
        decay = (1.0 - self.epsilon) ** half_dt
        diff = (X[:, None, 1:] - Yv[None, :, 1:]) / ls  # (n, m, d)
        sq = diff ** 2
        K = decay * np.exp(-0.5 * sq.sum(-1))
        if not eval_gradient:
            return K
        d_log_eps = K * (-half_dt * self.epsilon / (1.0 - self.epsilon))
        d_log_ls = K[:, :, None] * sq
        return K, np.concatenate([d_log_eps[:, :, None], d_log_ls], axis=2)

    def diag(self, X):
        return np.ones(np.atleast_2d(X).shape[0])

    def is_stationary(self) -> bool:
        return True

    def __repr__(self) -> str:
        ls = ", ".join(f"{v:.3g}" for v in np.atleast_1d(self.length_scale))
        return f"TimeVaryingRBF(epsilon={self.epsilon:.3g}, length_scale=[{ls}])"


def _fit_optimizer(obj_func, initial_theta, bounds):
    """scikit-learn's GP optimizer protocol: L-BFGS-B on the negative log marginal likelihood (with its gradient),
    capped at ``FIT_MAXITER`` iterations (warm-started from the previous step's fit, few are needed)."""
    res = minimize(obj_func, initial_theta, method="L-BFGS-B", jac=True, bounds=bounds,
                   options={"maxiter": FIT_MAXITER})
    return res.x, float(res.fun)


@dataclass
class _Fit:
    """A fitted model of one step: the GP, the data it saw and the scalings to apply to queries."""

    gp: GaussianProcessRegressor
    X: np.ndarray  # (n, 2 + d)
    r_lo: float
    r_span: float
    y_mean: float
    y_std: float
    noise: float

    def r01(self, r: float) -> float:
        return (r - self.r_lo) / self.r_span


class _Acquisition:
    """UCB at a fixed context row ``base`` (its columns 2.. are replaced by the unit-cube point): the mean of the
    fitted GP plus ``kappa`` times the latent standard deviation under the batch GP."""

    def __init__(self, fit: _Fit, batch_gp: GaussianProcessRegressor, base: np.ndarray, kappa: float) -> None:
        self.fit, self.batch_gp, self.base, self.kappa = fit, batch_gp, base, kappa

    def mean_std(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean = self.fit.gp.predict(Z)
        _, std = self.batch_gp.predict(Z, return_std=True)
        return mean, np.sqrt(np.maximum(std ** 2 - self.fit.noise, 0.0))

    def __call__(self, u: np.ndarray) -> np.ndarray:
        Z = np.repeat(self.base[None, :], len(u), axis=0)
        Z[:, 2:] = u
        mean, std = self.mean_std(Z)
        return mean + self.kappa * std

    def negative(self, u: np.ndarray) -> float:
        return -float(self(np.asarray(u)[None, :])[0])


class PB2Explorer:
    """Observations of (interval, hyperparameters) -> score change, and the GP-bandit choice of new values.

    Args:
        space: the search space; its float and int dimensions are modelled, categoricals perturbed.
        population_size: members (>= 1).
        perturbation_interval: updates per interval (>= 1); time is measured in intervals.
        max_data: observations kept and fitted on (the most recent), >= 4.
        min_data: fewer observations than this: :meth:`ready_to_model` is False (the caller perturbs), >= 2.
        candidates: random points scored before the polish, >= 1.

    Use per scheduler step: :meth:`observe` (scores after training), then :meth:`select` once per step with all
    recipients, then :meth:`remember` (the state every member starts its next interval from). Raises
    ``ValueError`` for invalid arguments.
    """

    def __init__(self, space: SearchSpace, *, population_size: int, perturbation_interval: int, max_data: int = 128,
                 min_data: int = 4, candidates: int = 512) -> None:
        self.space = space
        self.names = space.numeric_names
        for what, value, low in (("population_size", population_size, 1),
                                 ("perturbation_interval", perturbation_interval, 1), ("max_data", max_data, 4),
                                 ("min_data", min_data, 2), ("candidates", candidates, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"PB2 {what} must be an integer >= {low}, got {value!r}")
        self.population_size = population_size
        self.interval = perturbation_interval
        self.max_data = max_data
        self.min_data = min_data
        self.candidates = candidates
        # observations: (t, r, y, x-dict); prev: per member the start of its current interval
        self._data: list[tuple[float, float, float, dict[str, float]]] = []
        self._prev: list[Optional[dict[str, Any]]] = [None] * population_size
        self._theta: Optional[list[float]] = None  # the last fit's kernel hyperparameters (log), its warm start

    # ------------------------------------------------------------------ data

    @property
    def num_observations(self) -> int:
        return len(self._data)

    def ready_to_model(self) -> bool:
        """Whether the GP has data to choose from (``min_data`` observations and a numeric dimension)."""
        return bool(self.names) and len(self._data) >= self.min_data

    def _units(self, x: Mapping[str, Any]) -> list[float]:
        return self.space.to_unit(x, self.names)

    def observe(self, scores: Sequence[Optional[float]], hparams: Sequence[Mapping[str, Any]],
                updates: Sequence[int]) -> int:
        """Add each member's last interval as an observation; returns how many were added.

        ``scores``: larger is better (None: missing); ``hparams``: what each member trained with over the
        interval; ``updates``: its update count now. A member gives nothing when it has no recorded start, a
        missing score at either end, no new update, or hyperparameters that differ from the recorded ones.
        """
        added = 0
        for m in range(self.population_size):
            prev = self._prev[m]
            s = scores[m]
            if prev is None or prev["score"] is None or s is None or not math.isfinite(s):
                continue
            du = int(updates[m]) - int(prev["updates"])
            if du <= 0 or not np.allclose(self._units(hparams[m]), self._units(prev["x"]), rtol=0, atol=1e-12):
                continue
            t = prev["updates"] / self.interval
            y = (float(s) - prev["score"]) / (du / self.interval)
            self._data.append((float(t), float(prev["score"]), float(y),
                               {n: float(prev["x"][n]) for n in self.names}))
            added += 1
        del self._data[:-self.max_data]
        return added

    def remember(self, scores: Sequence[Optional[float]], hparams: Sequence[Mapping[str, Any]],
                 updates: Sequence[int]) -> None:
        """Record where each member starts its next interval (after this step's exploits: a recipient's score is
        its donor's, its hyperparameters the explored ones)."""
        for m in range(self.population_size):
            s = scores[m]
            self._prev[m] = {
                "updates": int(updates[m]),
                "score": None if s is None or not math.isfinite(s) else float(s),
                "x": {n: float(hparams[m][n]) for n in self.names},
            }

    # ------------------------------------------------------------------ model

    def _fit(self, seed: int) -> _Fit:
        data = self._data
        t = np.array([d[0] for d in data])
        r = np.array([d[1] for d in data])
        y = np.array([d[2] for d in data])
        x = np.array([self._units(d[3]) for d in data]).reshape(len(data), len(self.names))
        r_lo, r_span = float(r.min()), float(r.max() - r.min())
        r_span = r_span if r_span > 0 else 1.0
        y_mean, y_std = float(y.mean()), float(y.std())
        y_std = y_std if y_std > 0 else 1.0
        ys = np.clip((y - y_mean) / y_std, -2.0, 2.0)
        X = np.column_stack([t, (r - r_lo) / r_span, x])
        kernel = (ConstantKernel(1.0, (0.05, 20.0))
                  * TimeVaryingRBF(0.1, np.ones(X.shape[1] - 1), EPSILON_BOUNDS, LENGTH_SCALE_BOUNDS)
                  + WhiteKernel(0.1, (1e-3, 1.0)))
        if self._theta is not None and len(self._theta) == len(kernel.theta):
            kernel = kernel.clone_with_theta(np.clip(self._theta, kernel.bounds[:, 0], kernel.bounds[:, 1]))
        gp = GaussianProcessRegressor(kernel, alpha=1e-8, optimizer=_fit_optimizer, normalize_y=False,
                                      n_restarts_optimizer=1, random_state=seed % (2 ** 32))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gp.fit(X, ys)
        self._theta = [float(v) for v in gp.kernel_.theta]
        noise = float(gp.kernel_.k2.noise_level)
        return _Fit(gp=gp, X=X, r_lo=r_lo, r_span=r_span, y_mean=y_mean, y_std=y_std, noise=noise)

    # ------------------------------------------------------------------ select

    def select(self, placements: Sequence[tuple[int, int]], scores: Sequence[Optional[float]],
               hparams: Sequence[Mapping[str, Any]], updates: Sequence[int], seed: int
               ) -> dict[int, tuple[dict[str, Any], dict[str, Any]]]:
        """New numeric hyperparameters for each ``(recipient, donor)`` of this step, in the given order.

        ``scores`` (larger is better), ``hparams`` and ``updates`` are this step's, before the exploits. Returns
        ``{recipient: (values, info)}``: ``values`` the donor's hyperparameters with every numeric searched name
        chosen by the GP (categoricals left as the donor's: the caller perturbs them); ``info`` JSON-able:
        ``predicted_change`` (the GP mean of the score change per interval, score units), ``predicted_std``,
        ``kappa``, ``observations``, ``epsilon``. Call only when :meth:`ready_to_model`.
        """
        if not self.ready_to_model():
            raise ValueError("PB2 has no model yet: call select only when ready_to_model()")
        # The matrices are small (n <= max_data): one BLAS thread is faster, and on a busy machine a threaded
        # BLAS spinning for cores that other processes hold is 10-40x slower (measured on 2 shared cores).
        with threadpool_limits(limits=1, user_api="blas"):
            return self._select(placements, scores, hparams, updates, seed)

    def _select(self, placements: Sequence[tuple[int, int]], scores: Sequence[Optional[float]],
                hparams: Sequence[Mapping[str, Any]], updates: Sequence[int], seed: int
                ) -> dict[int, tuple[dict[str, Any], dict[str, Any]]]:
        fit = self._fit(seed)
        rng = np.random.default_rng(seed)
        d = len(self.names)
        recipients = {rcp for rcp, _ in placements}
        # The batch: members that keep their hyperparameters, each at its own context.
        batch = [self._row(fit, updates[m], scores[m], self._units(hparams[m]))
                 for m in range(self.population_size) if m not in recipients and scores[m] is not None]
        kappa = ucb_kappa(len(self._data))
        best_seen = [self._units(self._data[i][3]) for i in np.argsort([-dd[2] for dd in self._data])[:3]]
        out: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
        for rcp, donor in placements:
            base = self._row(fit, updates[donor], scores[donor], [0.0] * d)
            acq = _Acquisition(fit, self._batch_gp(fit, batch), base, kappa)
            starts = np.vstack([rng.uniform(0.0, 1.0, size=(self.candidates, d)),
                                np.array([self._units(hparams[donor])] + best_seen).reshape(-1, d)])
            values = acq(starts)
            best_u, best_v = starts[int(np.argmax(values))], float(values.max())
            for i in np.argsort(-values, kind="stable")[:POLISH]:
                res = minimize(acq.negative, starts[i], method="L-BFGS-B", bounds=[(0.0, 1.0)] * d,
                               options={"maxiter": ACQ_MAXITER})
                if np.all(np.isfinite(res.x)) and -float(res.fun) > best_v:
                    best_u, best_v = np.clip(res.x, 0.0, 1.0), -float(res.fun)
            chosen = self.space.from_unit(list(best_u), self.names)
            new = dict(hparams[donor])
            new.update(chosen)
            Z = base.copy()
            Z[2:] = self._units(new)
            mean, std_f = acq.mean_std(Z[None, :])
            out[rcp] = (new, {
                "predicted_change": float(mean[0]) * fit.y_std + fit.y_mean,
                "predicted_std": float(std_f[0]) * fit.y_std,
                "kappa": kappa,
                "observations": len(self._data),
                "epsilon": float(fit.gp.kernel_.k1.k2.epsilon),
            })
            batch.append(Z)
        return out

    def _row(self, fit: _Fit, updates: int, score: Optional[float], units: Sequence[float]) -> np.ndarray:
        r = fit.r01(float(score)) if score is not None and math.isfinite(score) else 0.5
        return np.array([int(updates) / self.interval, r, *units], dtype=float)

    @staticmethod
    def _batch_gp(fit: _Fit, batch: list[np.ndarray]) -> GaussianProcessRegressor:
        """The fitted kernel conditioned on the data plus the batch's pseudo-observations (GP-BUCB): only its
        variance is used, which does not depend on the targets."""
        if not batch:
            return fit.gp
        X = np.vstack([fit.X, np.array(batch)])
        gp = GaussianProcessRegressor(fit.gp.kernel_, alpha=fit.gp.alpha, optimizer=None, normalize_y=False)
        return gp.fit(X, np.zeros(len(X)))

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """JSON-able: the observations and every member's recorded interval start."""
        return {
            "theta": self._theta,
            "data": [{"t": t, "r": r, "y": y, "x": dict(x)} for t, r, y, x in self._data],
            "prev": [None if p is None else {"updates": p["updates"], "score": p["score"], "x": dict(p["x"])}
                     for p in self._prev],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output. Raises ``ValueError`` when it is malformed or sized for another
        population."""
        try:
            data = [(float(o["t"]), float(o["r"]), float(o["y"]), {n: float(o["x"][n]) for n in self.names})
                    for o in state["data"]]
            prev = [None if p is None else {"updates": int(p["updates"]),
                                            "score": None if p["score"] is None else float(p["score"]),
                                            "x": {n: float(p["x"][n]) for n in self.names}}
                    for p in state["prev"]]
            theta = state.get("theta")
            theta = None if theta is None else [float(v) for v in theta]
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"malformed PB2 state: {err!r}") from None
        if len(prev) != self.population_size:
            raise ValueError(f"PB2 state is for a population of {len(prev)}, this one has {self.population_size}")
        self._data = data[-self.max_data:]
        self._prev = prev
        self._theta = theta
