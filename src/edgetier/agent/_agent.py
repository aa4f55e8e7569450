"""The node agent: enrols once, then heartbeats, long-polls its desired state, delivers
its outbox and reconciles, each in a task of its own, so that a controller that is away
stops none of them but the calls to it.

On start it reconciles from its local store before it contacts the controller, so a node
restarted while the controller is down comes back to its last desired state::

    settings = AgentSettings(controller="http://127.0.0.1:8080", name="edge-1", token=T)
    stop = asyncio.Event()          # set it (SIGTERM) to stop: children drain, outbox flushed
    code = await Agent(settings).run(stop)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edgetier.agent._children import Backoff
from edgetier.agent._client import ControllerClient, etag_of
from edgetier.agent._errors import (
    ControllerError,
    ControllerUnreachableError,
    CredentialRejectedError,
    OutboxGapError,
)
from edgetier.agent._notices import NoticeListener
from edgetier.agent._reconcile import Reconciler
from edgetier.agent._settings import AgentSettings
from edgetier.agent._store import AgentStore, Credential
from edgetier.agent._telemetry import NodeIdentity, Telemetry, identify, open_telemetry
from edgetier.control import (
    Condition,
    DesiredState,
    EnrolRequest,
    Heartbeat,
    MqttBroker,
    RecordBatch,
    TelemetrySummary,
)
from edgetier.errors import ConfigError

__all__ = ["EXIT_CREDENTIAL", "EXIT_OK", "Agent"]

log = logging.getLogger("edgetier.agent")

EXIT_OK = 0
EXIT_CREDENTIAL = 4
"""The exit status when the controller refuses the token or the node credential."""
FLUSH_TIMEOUT_S = 3.0
"""On stop, how long the agent tries to deliver its outbox before it exits."""


class Agent:
    """One node's agent; :meth:`run` until ``stop`` is set or the credential is refused."""

    def __init__(
        self,
        settings: AgentSettings,
        *,
        identity: NodeIdentity | None = None,
        telemetry: Telemetry | None = None,
        client: ControllerClient | None = None,
    ) -> None:
        self.settings = settings
        self._identity = identity
        self._telemetry = telemetry
        self.client = client or ControllerClient(
            settings.controller_urls, timeout_s=settings.request_timeout_s
        )
        self.store: AgentStore | None = None
        self.reconciler: Reconciler | None = None
        self.node = settings.name
        self.credential: Credential | None = None
        self.desired: DesiredState | None = None
        self.heartbeat_s = settings.heartbeat_s
        self._wake = asyncio.Event()
        self._outbox_ready = asyncio.Event()
        self._poll_now = asyncio.Event()
        self._fetch_now = asyncio.Event()  # a change notice: fetch desired state at once
        self._loop: asyncio.AbstractEventLoop | None = None
        self.notices: NoticeListener | None = None
        if settings.mqtt_url is not None:  # paho missing: MissingExtraError now, not later
            self.notices = NoticeListener(
                MqttBroker.parse(settings.mqtt_url),
                settings.name,
                on_notice=lambda generation: self._soon(self._notice, generation),
                on_link=lambda up, why: self._soon(self._notice_link, up, why),
                wait_s=settings.wait_s,
            )
        self._link_down_since: float | None = None
        self._gap: str | None = None
        self._fatal: BaseException | None = None

    # -- running -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> int:
        """Run until ``stop`` is set (exit status 0) or the controller refuses this node's
        credential (CredentialRejectedError, after the children are stopped)."""
        stop = stop or asyncio.Event()
        settings = self.settings
        self._loop = asyncio.get_running_loop()
        store = self.store = AgentStore(settings.store_dir, keep_acked=settings.keep_acked_records)
        try:
            store.claim(settings.name, ",".join(settings.controller_urls))
            credential = self._usable_credential(store)
            identity = self._identity
            if identity is None:
                identity = await asyncio.to_thread(identify, settings)
            telemetry = self._telemetry or open_telemetry(identity)
            reconciler = self.reconciler = Reconciler(
                settings,
                store,
                settings.name,
                download=self._download,
                record=self.record,
                wake=self._wake.set,
            )
            reconciler.stop_stale_children()
            await reconciler.verify_artifacts()
            self.desired = store.desired()
            self.record(
                "agent.started",
                self.node,
                {
                    "profile": identity.profile,
                    "tier": identity.tier,
                    "presented": identity.presented,
                    "desired_generation": self.desired.generation if self.desired else 0,
                },
            )
            tasks = [asyncio.create_task(self._reconcile_loop(), name="agent-reconcile")]
            tasks.append(
                asyncio.create_task(
                    self._network(credential, identity, telemetry), name="agent-network"
                )
            )
            waiter = asyncio.create_task(stop.wait(), name="agent-stop")
            everything = [waiter, *tasks]
            done, _ = await asyncio.wait(everything, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not waiter and not task.cancelled() and task.exception() is not None:
                    self._fatal = task.exception()
            for task in everything:
                task.cancel()
            await asyncio.gather(*everything, return_exceptions=True)
            await reconciler.close()
            self.record("agent.stopped", self.node, {"reason": _why(self._fatal)})
            if not isinstance(self._fatal, CredentialRejectedError):
                await self._flush(FLUSH_TIMEOUT_S)
        finally:
            if self.notices is not None:
                await asyncio.to_thread(self.notices.close)
            if self.reconciler is not None:  # stopped by an error or a cancellation too
                await self.reconciler.close()
            await self.client.aclose()
            store.close()
        if self._fatal is not None:
            raise self._fatal
        return EXIT_OK

    def record(self, kind: str, subject: str, data: dict[str, Any]) -> None:
        """Add an event to the outbox (numbered per node; delivered in order)."""
        assert self.store is not None
        sequence = self.store.append(kind, subject, data)
        log.debug("record %d %s %s %s", sequence, kind, subject, data)
        self._outbox_ready.set()

    # -- enrolment -----------------------------------------------------------------------

    def _usable_credential(self, store: AgentStore) -> Credential | None:
        """The stored credential, or None when the agent must enrol (with its token)."""
        held = store.credential()
        token = self.settings.token
        given = _sha256(token) if token else None
        # Expiry is the controller's to judge (a node's clock may be wrong after a boot
        # without network): only a credential the controller refused is not used again.
        if held is not None and not held.rejected:
            return held
        if held is not None and (given is None or given == held.token_sha256):
            raise CredentialRejectedError(
                f"node {held.node}: its credential was refused by the controller; create a "
                "new enrolment token "
                "on the controller and start the agent again with --token NEW (the store "
                "keeps its desired state and outbox)",
                status=401,
            )
        if token is None:
            raise ConfigError(
                f"--token: node {self.settings.name} has not enrolled yet (no credential in "
                f"{store.directory}); give the one-time enrolment token"
            )
        return None

    async def _enrol(self, identity: NodeIdentity) -> Credential:
        assert self.store is not None and self.settings.token is not None
        request = EnrolRequest(
            token=self.settings.token,
            name=self.settings.name,
            tier=identity.tier,
            profile=identity.profile,
            labels=self.settings.labels,
            capacity=identity.capacity,
        )
        backoff = Backoff(self.settings.retry_initial_s, self.settings.retry_max_s)
        while True:
            try:
                reply = await self.client.enrol(request)
                break
            except ControllerUnreachableError as exc:
                self._link(False, str(exc))
                await asyncio.sleep(backoff.failed())
            except CredentialRejectedError as exc:
                raise CredentialRejectedError(
                    f"enrolment of node {self.settings.name} refused: {exc.message}; the token "
                    "was used before, expired or was revoked: create a new one on the "
                    "controller and start again with --token NEW",
                    status=401,
                ) from None
        self._link(True)
        credential = Credential(
            reply.node, reply.credential, reply.expires_at, _sha256(self.settings.token)
        )
        self.store.save_credential(credential)
        self.record("agent.enrolled", reply.node, {"expires_at": reply.expires_at.isoformat()})
        log.info("enrolled as node %s (credential kept in %s)", reply.node, self.store.path)
        return credential

    # -- the loops -----------------------------------------------------------------------

    async def _network(
        self, credential: Credential | None, identity: NodeIdentity, telemetry: Telemetry
    ) -> None:
        if credential is None:
            credential = await self._enrol(identity)
        self.node = credential.node
        self.client.credential = credential.credential
        self.credential = credential
        if self.notices is not None:
            self.notices.start()
        loops = [
            self._guard(self._heartbeat_loop(telemetry)),
            self._guard(self._poll_loop()),
            self._guard(self._deliver_loop()),
        ]
        await asyncio.gather(*loops)

    async def _guard(self, loop: Awaitable[None]) -> None:
        """A refused credential ends the agent: remember it, let run() stop the children."""
        try:
            await loop
        except CredentialRejectedError as exc:
            assert self.store is not None
            self.store.reject_credential()
            message = (
                f"node {self.node}: the controller refused its credential ({exc.message}): "
                "it was revoked or has expired; create a new enrolment token on the "
                "controller and start the agent again with --token NEW"
            )
            log.error("%s; stopping", message)
            raise CredentialRejectedError(message, status=401) from None

    async def _reconcile_loop(self) -> None:
        assert self.reconciler is not None
        while True:
            self._wake.clear()
            try:
                took = await self.reconciler.step(self.desired)
            except Exception:
                log.exception("reconcile step failed; trying again")
                took = False
                await asyncio.sleep(self.settings.retry_max_s)
            if took:
                await asyncio.sleep(0)
                continue
            delay = self.reconciler.next_pass_s(self.settings.resync_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def _heartbeat_loop(self, telemetry: Telemetry) -> None:
        assert self.store is not None and self.reconciler is not None
        while True:
            try:
                summary = await asyncio.to_thread(telemetry.sample)
            except Exception as exc:  # a sensor gone away must not stop the heartbeat
                log.warning("telemetry sample failed: %s", exc)
                summary = TelemetrySummary()
            self.record("telemetry", self.node, summary.model_dump(mode="json"))
            try:
                await self.reconciler.sample_health()
            except Exception as exc:  # figures missing must not stop the heartbeat
                log.warning("workload health not sampled: %s", exc)
            own = self._own(self.reconciler.degraded())
            heartbeat = Heartbeat(
                telemetry=summary,
                conditions=[*self.reconciler.conditions(), *telemetry.conditions(), *own],
                workloads=self.reconciler.workload_states(),
                desired_generation=self.desired.generation if self.desired else 0,
                outbox_pending=self.store.pending_count(),
            )
            try:
                reply = await self.client.heartbeat(self.node, heartbeat)
            except ControllerUnreachableError as exc:
                self._link(False, str(exc))
            except CredentialRejectedError:
                raise
            except ControllerError as exc:
                log.error("heartbeat refused: %s", exc.message)
            else:
                self._link(True)
                self.heartbeat_s = reply.heartbeat_interval_s
                held = self.desired.generation if self.desired else 0
                if reply.desired_generation != held:
                    self._poll_now.set()
                await self._renew_if_due()
            await asyncio.sleep(self.heartbeat_s)

    async def _renew_if_due(self) -> None:
        """Renew the node credential before it expires (node credentials last weeks; a
        node that is online renews well before, so it never needs a new enrolment)."""
        assert self.store is not None
        held = self.credential
        if held is None:
            return
        left_s = (held.expires_at - datetime.now(UTC)).total_seconds()
        if left_s > self.settings.renew_before_s:
            return
        try:
            reply = await self.client.renew(self.node)
        except CredentialRejectedError:
            raise
        except ControllerError as exc:  # unreachable or refused: the next heartbeat retries
            log.warning("renewing the node credential failed: %s", exc.message)
            return
        renewed = Credential(reply.node, reply.credential, reply.expires_at, held.token_sha256)
        self.store.save_credential(renewed)
        self.credential, self.client.credential = renewed, renewed.credential
        self.record(
            "agent.credential_renewed", self.node, {"expires_at": reply.expires_at.isoformat()}
        )
        log.info("node credential renewed (expires %s)", reply.expires_at.isoformat())

    async def _poll_loop(self) -> None:
        assert self.store is not None
        backoff = Backoff(self.settings.retry_initial_s, self.settings.retry_max_s)
        etag = etag_of(self.desired.generation) if self.desired is not None else None
        while True:
            self._poll_now.clear()
            try:
                answer = await self._desired(etag)
            except ControllerUnreachableError as exc:
                self._link(False, str(exc))
                await self._pause(backoff.failed(), self._poll_now)
                continue
            except CredentialRejectedError:
                raise
            except ControllerError as exc:
                log.error("desired state refused: %s", exc.message)
                await self._pause(backoff.failed(), self._poll_now)
                continue
            backoff.succeeded()
            self._link(True)
            if answer is None:
                continue  # 304: nothing changed within wait_s
            desired, tag = answer
            etag = tag or etag_of(desired.generation)
            if desired.node != self.node:
                log.error("desired state for node %r, not %r: ignored", desired.node, self.node)
                await self._pause(self.settings.retry_max_s, self._poll_now)
                continue
            if desired == self.desired:
                # a controller that ignores If-None-Match must not make this a busy loop
                await self._pause(min(1.0, self.heartbeat_s), self._poll_now)
                continue
            self.store.save_desired(desired)  # kept before anything acts on it
            self.desired = desired
            self.record(
                "desired.received",
                self.node,
                {"generation": desired.generation, "assignments": len(desired.assignments)},
            )
            self._wake.set()

    async def _desired(self, etag: str | None) -> tuple[DesiredState, str | None] | None:
        """The long poll; with change notices, a notice cuts it short and the desired
        state is asked for at once (the parked poll may be on a replica that never wakes)."""
        wait_s = self.settings.wait_s
        if self.notices is None:
            return await self.client.desired(self.node, etag=etag, wait_s=wait_s)
        if not self._fetch_now.is_set():
            poll = asyncio.create_task(self.client.desired(self.node, etag=etag, wait_s=wait_s))
            notice = asyncio.create_task(self._fetch_now.wait())
            try:
                await asyncio.wait({poll, notice}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                notice.cancel()
                if not poll.done():
                    poll.cancel()
                await asyncio.gather(poll, notice, return_exceptions=True)
            if not poll.cancelled():
                return poll.result()  # answered first (a notice meanwhile: asked next time)
        self._fetch_now.clear()
        return await self.client.desired(self.node, etag=etag, wait_s=0)

    def _notice(self, generation: int) -> None:
        """A change notice (on the event loop): fetch now unless this generation is held."""
        held = self.desired.generation if self.desired is not None else 0
        if generation == held:
            return
        log.debug("change notice: generation %d (holding %d): fetching now", generation, held)
        self._fetch_now.set()
        self._poll_now.set()  # also cuts a back-off short

    def _notice_link(self, up: bool, why: str) -> None:
        data = {"broker": str(self.notices.broker) if self.notices else ""}
        if not up:
            data["error"] = why[:300]
        self.record("notices.reachable" if up else "notices.unreachable", self.node, data)

    def _soon(self, callback: Callable[..., None], *args: Any) -> None:
        """Run ``callback(*args)`` on the agent's event loop (from paho's thread)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop stopped meanwhile
                loop.call_soon_threadsafe(callback, *args)

    async def _deliver_loop(self) -> None:
        backoff = Backoff(self.settings.retry_initial_s, self.settings.retry_max_s)
        while True:
            self._outbox_ready.clear()
            try:
                progressed = await self._deliver_batch()
            except ControllerUnreachableError as exc:
                self._link(False, str(exc))
                await self._pause(backoff.failed(), None)
                continue
            except CredentialRejectedError:
                raise
            except ControllerError as exc:
                log.error("records refused: %s", exc.message)
                await self._pause(backoff.failed(), None)
                continue
            if progressed is None:  # nothing to send
                backoff.succeeded()
                await self._pause(self.heartbeat_s, self._outbox_ready)
            elif progressed:
                backoff.succeeded()
            else:
                await self._pause(backoff.failed(), None)

    async def _deliver_batch(self) -> bool | None:
        """Send the oldest unacknowledged records; None when there are none, else whether
        the controller's acknowledgement moved on."""
        assert self.store is not None
        store = self.store
        batch = store.pending(limit=self.settings.batch_size)
        if not batch:
            return None
        before = store.acked_through
        try:
            ack = await self.client.records(self.node, RecordBatch(records=batch))
        except OutboxGapError as gap:
            return self._gap_answer(gap)
        self._link(True)
        if ack.acked_through > store.last_sequence:
            log.warning(
                "the controller holds records up to %d, this store numbered only %d: "
                "numbering goes on after the controller's",
                ack.acked_through,
                store.last_sequence,
            )
            store.skip_to(ack.acked_through)
        after = store.ack(ack.acked_through)
        if ack.duplicates:
            log.info(
                "%d record(s) were already stored (sent again after a lost answer)", ack.duplicates
            )
        self._gap = None
        return after > before

    def _gap_answer(self, gap: OutboxGapError) -> bool:
        assert self.store is not None
        if self.store.rewind(gap.expected):
            log.warning("the controller lacks records from %d: sending them again", gap.expected)
            self._gap = None
            return True
        oldest = self.store.oldest_sequence()
        self._gap = (
            f"the controller expects record {gap.expected}; this store holds records from "
            f"{oldest} only (keep_acked_records={self.settings.keep_acked_records})"
        )
        log.error("outbox gap: %s", self._gap)
        return False

    async def _flush(self, timeout_s: float) -> None:
        """Deliver what can be delivered within ``timeout_s`` (on stop)."""
        if self.client.credential is None:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                progressed = await asyncio.wait_for(
                    self._deliver_batch(), max(0.1, deadline - time.monotonic())
                )
            except (ControllerError, TimeoutError):
                return
            if not progressed:
                return

    # -- helpers -------------------------------------------------------------------------

    async def _download(self, digest: str, target: Path) -> int:
        if self.client.credential is None:
            raise ControllerUnreachableError("not enrolled yet: no credential to download with")
        return await self.client.download(
            digest, target, timeout_s=self.settings.download_timeout_s
        )

    def _own(self, workload: Condition | None = None) -> list[Condition]:
        """The node's Degraded condition: a degraded workload's (load failed, error rate,
        latency) first, else whether the outbox can be delivered."""
        if workload is not None:
            return [workload]
        if self._gap is not None:
            return [
                Condition(type="Degraded", status="True", reason="OutboxGap", message=self._gap)
            ]
        return [Condition(type="Degraded", status="False", reason="OutboxDelivering")]

    def _link(self, up: bool, why: str = "") -> None:
        """Note the link to the controller going down or coming back (logged once)."""
        if up and self._link_down_since is not None:
            away = time.monotonic() - self._link_down_since
            self._link_down_since = None
            log.info("controller reachable again after %.1f s", away)
            self.record("controller.reachable", self.node, {"away_s": round(away, 3)})
        elif not up and self._link_down_since is None:
            self._link_down_since = time.monotonic()
            log.warning("controller unreachable (%s): running from the local store", why)
            self.record("controller.unreachable", self.node, {"error": why[:300]})

    async def _pause(self, delay_s: float, event: asyncio.Event | None) -> None:
        if event is None:
            await asyncio.sleep(delay_s)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), delay_s)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _why(exc: BaseException | None) -> str:
    return "stopped" if exc is None else f"{type(exc).__name__}: {exc}"
