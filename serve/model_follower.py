"""Load the model at startup, then follow its registry alias: promotions reach a running server.

A server started on ``models:/<name>@<alias>`` (``@champion`` by default) asks the
registry where the alias points (:meth:`MlflowClient.get_model_version_by_alias
<mlflow.MlflowClient.get_model_version_by_alias>`) every ``follow_interval_s`` seconds and
on ``POST /v1/admin/reload`` (:class:`ModelFollower`). When it points at another version:

1. that version is loaded by number (``models:/<name>/<version>``, so the alias moving
   again meanwhile changes nothing) in a worker thread, beside the one answering: the
   event loop keeps serving;
2. it must answer a test prediction on invented text (:func:`check_prediction`);
3. it is swapped in on the event loop in one step (``state.predictor`` and ``state.card``
   together). A request that already holds the old predictor finishes on it; every
   prediction names the version that answered (``model_version``), and so does
   ``/v1/model``. The swap is logged with both versions.

A version that fails to load or to predict is refused: the old one keeps answering, the
refusal is logged (WARNING) and shown on ``/v1/model`` (``last_reload``). The timer does not
load a refused version again; ``POST /v1/admin/reload`` does (after fixing its files). A
pinned URI (``models:/<name>/<version>``, a run, a folder) is never followed.

Memory stays bounded by two models: the swapped-out predictor is dropped at once (requests
still running on it keep it until they end), and no other version is loaded while it is
still alive (``postponed``, retried at the next check). Once it is freed, the freed heap is
handed back to the operating system (glibc ``malloc_trim``), so resident memory falls back.
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import gc
import logging
import math
import time
import traceback
import weakref
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.to_thread

from imr_outcome.errors import ImrOutcomeError, IncompatibleModelError, ModelNotFoundError
from imr_outcome.serve.api_calls import ServerState
from imr_outcome.serve.api_limits import ServeSettings
from imr_outcome.serve.api_model import alias_of, describe_model
from imr_outcome.serve.api_schemas import ModelCard, ReloadOutcome, ReloadReport
from imr_outcome.serve.predictor import PredictInput, Predictor

logger = logging.getLogger(__name__)

#: Loads the predictor for the settings' ``model_uri`` (runs in a worker thread).
Loader = Callable[[ServeSettings], Predictor]
#: ``(name, alias) -> version``: where a registry alias points now.
AliasLookup = Callable[[str, str], str]

#: The test prediction a new version must answer before it is swapped in (invented text).
CHECK_REQUEST = "Physical therapy 6 sessions for the lumbar spine"
CHECK_SUMMARY = (
    "The injured worker is a 50 year old with chronic low back pain after lifting boxes at "
    "work. Medications and a home exercise program did not help; the physician requested "
    "physical therapy for the lumbar spine."
)


def load_predictor(settings: ServeSettings) -> Predictor:
    """The default :data:`Loader`: :meth:`Predictor.load` of ``settings.model_uri``."""
    return Predictor.load(
        settings.model_uri, max_chars=settings.max_chars, backend=settings.backend
    )


async def load_at_startup(
    state: ServerState, loader: Loader, on_failure: Callable[[], None]
) -> None:
    """Load the model of ``state.settings`` in a worker thread and make the server ready.

    On failure ``state.error`` says why (``/readyz`` answers 503 with it) and
    ``on_failure`` is called (``imr-outcome serve`` stops the server and exits 2).
    """
    started = time.perf_counter()
    try:
        predictor = await anyio.to_thread.run_sync(loader, state.settings)
        card = await anyio.to_thread.run_sync(describe_model, predictor, state.settings)
    except ImrOutcomeError as exc:
        state.error = str(exc)
    except Exception as exc:  # a broken artifact must not leave /readyz "loading" forever
        state.error = f"{type(exc).__name__} while loading; see the server log"
        logger.exception("loading %s failed", state.settings.model_uri)
    else:
        state.predictor, state.card = predictor, card
        logger.info(
            "model %s version %s ready in %.1f s",
            card.name,
            card.version,
            time.perf_counter() - started,
        )
        return
    logger.error("cannot serve: %s", state.error)
    on_failure()


def check_prediction(predictor: Predictor) -> None:
    """Predict :data:`CHECK_REQUEST` / :data:`CHECK_SUMMARY` and check the answer.

    Raises:
        IncompatibleModelError: P(Overturned) or P(Upheld) is not a number in [0, 1], or
            they do not add up to 1 (within 0.001).
        Exception: whatever the model raises while predicting.
    """
    item = PredictInput.of(CHECK_REQUEST, CHECK_SUMMARY, max_chars=predictor.max_chars)
    [prediction] = predictor.predict_batch([item], explain=False)
    p_overturned, p_upheld = prediction.p_overturned, prediction.p_upheld
    if not (
        math.isfinite(p_overturned)
        and math.isfinite(p_upheld)
        and 0.0 <= p_overturned <= 1.0
        and abs(p_overturned + p_upheld - 1.0) <= 1e-3
    ):
        raise IncompatibleModelError(
            f"the test prediction gave P(Overturned)={p_overturned} and P(Upheld)="
            f"{p_upheld}; expected probabilities that add up to 1"
        )


class RegistryAliases:
    """The default :data:`AliasLookup`: one MLflow client on the default tracking store.

    The client is created on first use (``MLFLOW_TRACKING_URI``, else the project's
    store) and reused by every later check.
    """

    def __init__(self) -> None:
        self._client: Any = None

    def __call__(self, name: str, alias: str) -> str:
        """The version ``models:/<name>@<alias>`` points at now.

        Raises:
            ModelNotFoundError: no such model or alias, or the store cannot be read.
        """
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        from imr_outcome.model.model_uri import default_tracking_uri

        try:
            if self._client is None:
                tracking = default_tracking_uri()
                self._client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
            return str(self._client.get_model_version_by_alias(name, alias).version)
        except MlflowException as exc:
            raise ModelNotFoundError(
                f"models:/{name}@{alias}: the registry names no version ({exc.message})"
            ) from exc


def _trim_heap() -> None:
    """Hand freed heap pages back to the OS (glibc ``malloc_trim``); elsewhere nothing.

    Without it glibc keeps the arenas a freed model used, and resident memory stays at
    its peak after a swap.
    """
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _unexpected(exc: Exception) -> str:
    """A reason for an unexpected error, logged with its traceback frames only (as the
    API logs unexpected errors: no message, which could quote anything)."""
    logger.warning(
        "unexpected %s while loading or checking a new version\n%s",
        type(exc).__name__,
        "".join(traceback.format_tb(exc.__traceback__)),
    )
    return f"{type(exc).__name__} while loading or checking it; see the server log"


class ModelFollower:
    """Follows the registry alias of ``state.settings.model_uri`` (see the module docstring).

    Create it in the app and run :meth:`follow` in the lifespan; call :meth:`check_now`
    for ``POST /v1/admin/reload``. Everything but loading runs on the event loop.

    Args:
        state: the server state whose ``predictor`` / ``card`` are swapped.
        loader: loads a version (called with the settings' URI replaced by
            ``models:/<name>/<version>``) in a worker thread.
        lookup: where the alias points now (default: :class:`RegistryAliases`).

    Attributes:
        uri: the alias URI followed, or None for a pinned URI (nothing is followed).
        last_check: the latest check, or None.
        last_reload: the latest check that found another version (swapped, refused or
            postponed), or None.
    """

    def __init__(
        self, state: ServerState, loader: Loader, lookup: AliasLookup | None = None
    ) -> None:
        self.state = state
        self.loader = loader
        self.lookup = lookup or RegistryAliases()
        self.followed = alias_of(state.settings.model_uri)
        self.uri = state.settings.model_uri if self.followed else None
        self.last_check: ReloadReport | None = None
        self.last_reload: ReloadReport | None = None
        self._lock = asyncio.Lock()
        self._checks: set[asyncio.Task[ReloadReport]] = set()
        self._retired: weakref.ref[Predictor] | None = None
        self._retired_version = ""

    def card(self, card: ModelCard) -> ModelCard:
        """``card`` with the follow fields (the alias, interval, latest checks) filled in."""
        if self.uri is None:
            return card
        interval = self.state.settings.follow_interval_s
        return card.model_copy(
            update={
                "follows": self.uri,
                "follow_interval_s": interval if interval > 0 else None,
                "last_check": self.last_check,
                "last_reload": self.last_reload,
            }
        )

    async def follow(self) -> None:
        """Check the alias every ``follow_interval_s`` seconds until cancelled.

        Returns at once for a pinned URI or an interval of 0. Checks are skipped until
        the model has loaded and once the server drains.
        """
        interval = self.state.settings.follow_interval_s
        if self.uri is None or interval <= 0:
            return
        logger.info("following %s: checking every %g s", self.uri, interval)
        while True:
            await asyncio.sleep(interval)
            if self.state.predictor is not None and not self.state.drain.draining:
                await self.check(retry_refused=False)

    async def check_now(self) -> ReloadReport:
        """Check the alias now (``POST /v1/admin/reload``), retrying a refused version.

        The check runs in its own task: a client that disconnects does not stop a load
        halfway. It starts after a check already running has ended.
        """
        task = asyncio.ensure_future(self.check(retry_refused=True))
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)
        return await asyncio.shield(task)

    def close(self) -> None:
        """Cancel the checks still running (at shutdown; a load in progress is abandoned)."""
        for task in list(self._checks):
            task.cancel()

    async def check(self, *, retry_refused: bool) -> ReloadReport:
        """One check: look the alias up; load, test and swap in a new version.

        Never raises (but for cancellation): whatever goes wrong is the report's
        ``outcome`` and ``reason``, and the version answering stays.

        Args:
            retry_refused: load the version the alias points at even when it was refused
                before (the timer does not; ``POST /v1/admin/reload`` does).

        Returns:
            The report, also kept as :attr:`last_check` (and :attr:`last_reload` unless
            unchanged or unavailable).
        """
        async with self._lock:
            report = await self._check(retry_refused, time.perf_counter())
            # Published before the next await, so that no request sees the new version
            # beside the previous reload's report.
            self.last_check = report
            if report.outcome in ("swapped", "refused", "postponed"):
                self.last_reload = report
            if report.outcome == "swapped":
                await self._retired_alive()  # freed now unless a request still runs on it
        return report

    def _report(
        self,
        outcome: ReloadOutcome,
        started: float,
        version: str | None,
        *,
        previous: str | None = None,
        reason: str | None = None,
    ) -> ReloadReport:
        predictor = self.state.predictor
        return ReloadReport(
            outcome=outcome,
            uri=self.uri or "",
            version=version,
            serving=predictor.model_version if predictor is not None else "",
            previous=previous,
            reason=reason,
            checked_at=_now(),
            seconds=round(time.perf_counter() - started, 3),
        )

    async def _check(self, retry_refused: bool, started: float) -> ReloadReport:
        assert self.followed is not None and self.uri is not None
        name, alias = self.followed
        serving = self.state.predictor
        if serving is None:  # not loaded yet: nothing to compare with
            return self._report("unchanged", started, None)
        retired_alive = await self._retired_alive()
        try:
            version = await anyio.to_thread.run_sync(self.lookup, name, alias)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, ImrOutcomeError) else _unexpected(exc)
            last = self.last_check
            if last is None or (last.outcome, last.reason) != ("unavailable", reason):
                logger.warning(
                    "cannot check %s: %s; version %s keeps answering",
                    self.uri,
                    reason,
                    serving.model_version,
                )
            return self._report("unavailable", started, None, reason=reason)
        if version == serving.model_version:
            return self._report("unchanged", started, version)
        refused = self.last_reload
        if (
            not retry_refused
            and refused
            and (refused.outcome, refused.version)
            == (
                "refused",
                version,
            )
        ):
            return self._report("refused", started, version, reason=refused.reason)
        if retired_alive and await self._retired_alive(collect=True):
            reason = (
                f"version {self._retired_version} still answers requests; version {version} "
                "is loaded once they end (at most two models in memory)"
            )
            logger.info("%s points at version %s; postponed: %s", self.uri, version, reason)
            return self._report("postponed", started, version, reason=reason)
        try:
            predictor, card = await anyio.to_thread.run_sync(
                self._prepare, version, abandon_on_cancel=True
            )
        except Exception as exc:
            reason = str(exc) if isinstance(exc, ImrOutcomeError) else _unexpected(exc)
            logger.warning(
                "%s points at version %s, refused: %s; version %s keeps answering",
                self.uri,
                version,
                reason,
                serving.model_version,
            )
            return self._report("refused", started, version, reason=reason)
        old = self.state.predictor
        assert old is not None
        self.state.predictor, self.state.card = predictor, card  # one step on the loop
        self._retired, self._retired_version = weakref.ref(old), old.model_version
        del old, serving
        logger.info(
            "%s moved to version %s: swapped in for version %s (loaded and checked in %.1f s)",
            self.uri,
            version,
            self._retired_version,
            time.perf_counter() - started,
        )
        return self._report("swapped", started, version, previous=self._retired_version)

    def _prepare(self, version: str) -> tuple[Predictor, ModelCard]:
        """Load ``version`` by number, test it, describe it (in a worker thread).

        Raises:
            ImrOutcomeError: loading failed, the test prediction was wrong, or the loader
                returned another version.
            Exception: anything else the loader or the model raised.
        """
        assert self.followed is not None
        name = self.followed[0]
        pinned = dataclasses.replace(self.state.settings, model_uri=f"models:/{name}/{version}")
        predictor = self.loader(pinned)
        if predictor.model_version != version:
            raise IncompatibleModelError(
                f"models:/{name}/{version}: loaded version {predictor.model_version} instead"
            )
        check_prediction(predictor)
        return predictor, describe_model(predictor, self.state.settings)

    async def _retired_alive(self, collect: bool = False) -> bool:
        """Whether the predictor swapped out last is still in memory; once it is gone,
        hand its heap back to the OS and log it (once).

        Args:
            collect: run the garbage collector first when it is still there (for cycles;
                a full collection holds the interpreter lock for about 0.5 s with a
                transformer loaded, so only before a load is postponed).
        """
        if self._retired is None:
            return False
        if self._retired() is not None and collect:
            await anyio.to_thread.run_sync(gc.collect)
        if self._retired() is not None:
            return True
        self._retired = None
        await anyio.to_thread.run_sync(_trim_heap)
        logger.info("version %s released", self._retired_version)
        return False
