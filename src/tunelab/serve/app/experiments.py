"""A/B experiments on the server: which variant answers a request, and changing the weights.

A request whose ``model`` names an experiment is answered by one variant's served model.
Its unit is the body's ``user``, else the header ``unit_header`` (``X-Tunelab-User``).
The unit's first variant comes from a stable hash under the weights of that moment
(``tunelab.serve.experiments``) and is stored (``tunelab.db.assignments``, first writer
wins across processes); every later request reads it back, so a weight change, a reload
or a restart moves nobody. Reads go through a bounded in-memory cache (``CACHE_UNITS``
entries, each trusted for ``CACHE_SECONDS``): 1,000 requests of one user read the
database once, and a reassignment made by another server on the same database reaches
this one within ``CACHE_SECONDS``. A request with no unit, or to an experiment whose
unit is ``request``, gets a variant at random and nothing is stored. A variant of weight
0 takes no new unit and keeps those it has (how a canary is stopped without moving
anyone); a variant removed from the config hands its units to a fresh draw.

When the database cannot be reached, the request is still answered, by the hash choice
under the current weights (what a new unit would be given), not stored, with a warning
logged once until the database answers again: an unreachable database must not take
the server down, at the cost that a unit assigned before a weight change may see
another variant while it is down.

``ExperimentRouter.replace`` swaps the experiments at once (a SIGHUP reload, checked
first: every variant must name a served model, and a reload cannot load a new one);
``set_weights`` is the admin route's change, kept in memory until the next reload or
restart. ``add_admin_routes`` adds ``GET /admin/experiments`` and ``PUT
/admin/experiments/{name}``; the admin key is checked by ``tunelab.serve.app.auth``.
The router's cache and counters are touched on the event loop only; the experiments
mapping is replaced whole (one reference swap), so a reload from another thread is safe.
This module knows nothing of the engine or of how models are loaded.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import SQLAlchemyError

from tunelab.config.serve import MAX_WEIGHT, ExperimentSettings, load_serve_settings
from tunelab.db import NAME_LENGTH, Database
from tunelab.db import assignments as store
from tunelab.errors import ConfigError, TunelabError, UsageError
from tunelab.serve.app.errors import NOT_FOUND, APIError
from tunelab.serve.experiments import choose, draw

log = logging.getLogger("tunelab.serve")

EXPERIMENT_HEADER = "X-Tunelab-Experiment"
VARIANT_HEADER = "X-Tunelab-Variant"
CACHE_UNITS = 100_000  # (experiment, unit) pairs remembered; ~100 bytes each
CACHE_SECONDS = 60.0  # a cached assignment is trusted this long (another server may reassign)


@dataclass(frozen=True)
class Routed:
    """Where an experiment request goes."""

    experiment: str
    variant: str
    model: str  # the served model's name
    stored: bool  # whether the unit's assignment is kept (False: no unit, or unit 'request')
    unit: str | None = None  # the user it was routed by (the body's `user` or the unit header)

    def headers(self) -> dict[str, str]:
        return {EXPERIMENT_HEADER: self.experiment, VARIANT_HEADER: self.variant}


def variant_headers(experiment: str | None, variant: str | None) -> dict[str, str]:
    """The response headers that say which variant answered (none outside an experiment)."""
    if experiment is None or variant is None:
        return {}
    return {EXPERIMENT_HEADER: experiment, VARIANT_HEADER: variant}


def check_experiments(experiments: list[ExperimentSettings], served: Collection[str]) -> list[str]:
    """Every problem of ``experiments`` against the served model names, one line each."""
    problems = []
    names = ", ".join(sorted(served)) or "none"
    for i, e in enumerate(experiments):
        if e.name in served:
            problems.append(f"experiments.{i}.name: {e.name!r} is also a served model's name "
                            "or alias; a request naming it would be ambiguous. Rename the "
                            "experiment")
        for j, v in enumerate(e.variants):
            if v.model not in served:
                problems.append(
                    f"experiments.{i}.variants.{j}.model: experiment {e.name!r}, variant "
                    f"{v.name!r} names {v.model!r}, which is not served (served: {names}). "
                    "Name a served model or alias, or serve it (models: or aliases:); a "
                    "reload cannot load a new model, that needs a restart")
    return problems


class _Cache:
    """(experiment, unit) -> variant, least recently used out first, each entry for a while."""

    def __init__(self, size: int, seconds: float) -> None:
        self.size, self.seconds = size, seconds
        self._items: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()

    def get(self, key: tuple[str, str]) -> str | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[1] < time.monotonic():
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: tuple[str, str], variant: str) -> None:
        self._items[key] = (variant, time.monotonic() + self.seconds)
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def drop(self, experiment: str) -> None:
        for key in [k for k in self._items if k[0] == experiment]:
            del self._items[key]


class ExperimentRouter:
    """The experiments in force, their assignments, and routing one request.

    Args:
        experiments: the validated experiment settings.
        served: the names requests may use (models and aliases).
        db: where assignments are kept; required when any experiment is declared.

    Raises:
        ConfigError: a variant names a model that is not served, or an experiment has a
            served model's name.
        UsageError: experiments are declared but there is no database.
    """

    def __init__(self, experiments: list[ExperimentSettings], served: Collection[str],
                 db: Database | None) -> None:
        self.served = frozenset(served)
        self.db = db
        self._by_name: dict[str, ExperimentSettings] = {}
        self._created: dict[str, int] = {}
        self._origin: dict[str, str] = {}  # "config" or "admin": where the weights came from
        self._generation: dict[str, int] = {}  # bumped by a reassign: older reads are not cached
        self._cache = _Cache(CACHE_UNITS, CACHE_SECONDS)
        self._db_down = False
        self._lock = threading.Lock()  # a reload thread and the admin route change the mapping
        self._reloading = threading.Lock()  # two SIGHUPs in a row: one reload after the other
        self.replace(experiments)

    # --- the experiments in force ------------------------------------------------------

    def get(self, name: str) -> ExperimentSettings | None:
        return self._by_name.get(name)

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def created(self, name: str) -> int:
        """When ``name`` was first declared (Unix seconds), for ``/v1/models``."""
        return self._created[name]

    def replace(self, experiments: list[ExperimentSettings], source: str | None = None) -> None:
        """Put ``experiments`` in force, all at once, after checking them.

        Raises:
            ConfigError: as the constructor; the experiments in force stay.
        """
        problems = check_experiments(experiments, self.served)
        if problems:
            raise ConfigError(problems, source)
        if experiments and self.db is None:
            raise UsageError("experiments need a database to keep each user's variant",
                             hint="give the server a database (--db, or the default SQLite)")
        now = int(time.time())
        with self._lock:
            for e in experiments:
                self._created.setdefault(e.name, now)
            self._origin = {e.name: "config" for e in experiments}
            self._by_name = {e.name: e for e in experiments}  # one swap: old or new, never half

    def reload(self, path: str) -> bool:
        """Reread the experiments from the serve config ``path`` (SIGHUP); log the outcome.

        Only ``experiments`` is taken from the file; other settings need a restart.
        Returns whether the new experiments are in force (else the old ones stay).
        """
        try:
            with self._reloading:
                self.replace(load_serve_settings(path).experiments, path)
        except TunelabError as e:
            log.error("reload: the experiments in %s were refused; those in force stay. %s",
                      path, e)
            return False
        summary = "; ".join(f"{e.name}: " + ", ".join(f"{v.name}={v.weight:g}" for v in e.variants)
                            for e in self._by_name.values())
        log.info("reload: %d experiment(s) from %s (%s); other settings need a restart",
                 len(self._by_name), path, summary or "none")
        return True

    def set_weights(self, name: str, weights: Mapping[str, float]) -> ExperimentSettings:
        """New weights for some variants of ``name`` (the rest keep theirs); in memory only.

        Raises:
            APIError: 404 no such experiment; 400 an unknown variant, or no weight left above 0.
        """
        with self._lock:
            return self._set_weights(name, weights)

    def _set_weights(self, name: str, weights: Mapping[str, float]) -> ExperimentSettings:
        e = self._experiment(name)
        known = [v.name for v in e.variants]
        unknown = sorted(set(weights) - set(known))
        if unknown:
            raise APIError(400, f"experiment {name!r} has no variant {', '.join(unknown)} "
                                f"(its variants: {', '.join(known)})", param="weights")
        variants = [v.model_copy(update={"weight": weights.get(v.name, v.weight)})
                    for v in e.variants]
        if not sum(v.weight for v in variants) > 0:
            raise APIError(400, "at least one variant needs a weight above 0", param="weights")
        new = e.model_copy(update={"variants": variants})
        self._by_name = {**self._by_name, name: new}
        self._origin = {**self._origin, name: "admin"}
        log.info("admin: experiment %r weights now %s", name,
                 ", ".join(f"{v.name}={v.weight:g}" for v in variants))
        return new

    async def reassign(self, name: str) -> int:
        """Forget every unit's variant in ``name`` (they are drawn again); the count forgotten."""
        self._experiment(name)
        self._generation[name] = self._generation.get(name, 0) + 1
        self._cache.drop(name)
        assert self.db is not None
        deleted = await asyncio.to_thread(store.clear, self.db, name)
        self._cache.drop(name)  # anything cached while the delete ran
        log.info("admin: experiment %r: %d assignment(s) deleted; units are drawn again", name,
                 deleted)
        return deleted

    def _experiment(self, name: str) -> ExperimentSettings:
        e = self._by_name.get(name)
        if e is None:
            raise APIError(404, f"no experiment {name!r}; running: {', '.join(self.names()) or 'none'}",
                           NOT_FOUND, code="experiment_not_found")
        return e

    # --- one request -------------------------------------------------------------------

    def unit(self, experiment: ExperimentSettings, user: str | None,
             headers: Mapping[str, str]) -> str | None:
        """The request's unit: the body's ``user``, else the experiment's unit header.

        Raises:
            APIError: 400 when the header is longer than ``NAME_LENGTH`` characters.
        """
        if user:
            return user
        value = headers.get(experiment.unit_header)
        if value is not None and len(value) > NAME_LENGTH:
            raise APIError(400, f"the header {experiment.unit_header} is {len(value)} characters "
                                f"long; at most {NAME_LENGTH}", param=experiment.unit_header)
        return value or None

    async def route(self, name: str, user: str | None, headers: Mapping[str, str]) -> Routed | None:
        """Where a request naming ``name`` goes; None when ``name`` is no experiment.

        Raises:
            APIError: 400 for an overlong unit header.
        """
        e = self._by_name.get(name)
        if e is None:
            return None
        unit = self.unit(e, user, headers) if e.unit == "user" else None
        if unit is None:
            v = draw(e)
            return Routed(e.name, v.name, v.model, False)
        by_name = {v.name: v for v in e.variants}
        key = (e.name, unit)
        held = self._cache.get(key)
        if held is None or held not in by_name:
            generation = self._generation.get(e.name, 0)
            want = choose(e, unit).name
            held = await self._stored(e.name, unit, want, by_name)
            if held is None:  # the database is down: answered, not kept
                v = by_name[want]
                return Routed(e.name, v.name, v.model, False, unit)
            if self._generation.get(e.name, 0) == generation:
                self._cache.put(key, held)
        v = by_name[held]
        return Routed(e.name, v.name, v.model, True, unit)

    async def _stored(self, experiment: str, unit: str, want: str,
                      variants: Mapping[str, Any]) -> str | None:
        assert self.db is not None
        db = self.db

        def work() -> str:
            got = store.assign(db, experiment, unit, want)
            if got.variant not in variants:  # its variant left the experiment: drawn again
                return store.reassign_unit(db, experiment, unit, got.variant, want)
            if got.created:
                log.debug("experiment %r: a new unit got variant %r", experiment, got.variant)
            return got.variant

        try:
            held = await asyncio.to_thread(work)
        except SQLAlchemyError as e:
            if not self._db_down:
                log.warning("experiment %r: assignments cannot be read or stored (%s: %s); "
                            "answering by the hash under the current weights, unstored, until "
                            "the database answers", experiment, db.safe_url, type(e).__name__)
            self._db_down = True
            return None
        if self._db_down:
            log.info("experiment assignments are stored again")
            self._db_down = False
        return held if held in variants else want

    # --- what the admin route shows ----------------------------------------------------

    async def status(self, name: str | None = None) -> list[dict[str, Any]]:
        """Each experiment (or just ``name``): its settings, weights and units per variant."""
        chosen = [self._experiment(name)] if name else [self._by_name[n] for n in self.names()]
        assert self.db is not None or not chosen
        out = []
        for e in chosen:
            counts = await asyncio.to_thread(store.units_per_variant, self.db, e.name) \
                if self.db is not None else {}
            total = sum(v.weight for v in e.variants)
            out.append({
                "name": e.name, "unit": e.unit, "unit_header": e.unit_header,
                "control": e.control_variant, "weights_from": self._origin.get(e.name, "config"),
                "variants": [{"name": v.name, "model": v.model, "weight": v.weight,
                              "share": v.weight / total, "units": counts.get(v.name, 0)}
                             for v in e.variants],
                "units_elsewhere": sum(n for k, n in counts.items()
                                       if k not in {v.name for v in e.variants}),
            })
        return out


class WeightsUpdate(BaseModel):
    """The body of ``PUT /admin/experiments/{name}``."""

    model_config = ConfigDict(extra="forbid")

    # variant -> relative weight (>= 0, finite: JSON's Infinity would make every share NaN)
    weights: dict[str, Annotated[float, Field(allow_inf_nan=False, le=MAX_WEIGHT)]] = \
        Field(min_length=1)
    reassign: bool = False  # true: forget every unit's variant, draw again under the new weights

    def negative(self) -> list[str]:
        return [k for k, w in self.weights.items() if not w >= 0]


def add_admin_routes(app: FastAPI, router: ExperimentRouter) -> None:
    """``GET /admin/experiments`` and ``PUT /admin/experiments/{name}`` (admin key only)."""

    @app.get("/admin/experiments")
    async def list_experiments() -> dict[str, Any]:
        return {"object": "list", "data": await router.status()}

    @app.put("/admin/experiments/{name:path}")
    async def put_weights(name: str, body: WeightsUpdate) -> dict[str, Any]:
        bad = body.negative()
        if bad:
            raise APIError(400, f"weights must be 0 or more; {', '.join(bad)} are not",
                           param="weights")
        router.set_weights(name, body.weights)
        deleted = await router.reassign(name) if body.reassign else 0
        return {**(await router.status(name))[0], "reassigned": deleted}
