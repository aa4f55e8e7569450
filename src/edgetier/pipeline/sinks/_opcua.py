"""The OPC UA sink: an OPC UA server run by the node, with per-stream variables and an
EdgeTierEvent type, for MES and PLC consumers."""

from __future__ import annotations

import logging
import time
from typing import Any

from edgetier.pipeline._frame import Event, FramePacket
from edgetier.pipeline.sinks._base import Sink, SinkContext
from edgetier.pipeline.sinks._configs import OpcUaSink

log = logging.getLogger("edgetier.pipeline")


class OpcUa(Sink):
    """An OPC UA server run by the node: per-stream variables and an EdgeTierEvent type."""

    wants_frames = True

    def __init__(self, cfg: OpcUaSink, ctx: SinkContext) -> None:
        super().__init__(cfg, ctx)
        self.cfg: OpcUaSink = cfg
        self._server: Any = None
        self._vars: dict[tuple[str, str], Any] = {}
        self._last_frames_write: dict[str, float] = {}
        self.event_type: Any = None

    async def _variable(self, stream: str, name: str, value: Any, vtype: Any) -> Any:
        node = self._vars.get((stream, name))
        if node is None:
            parent = self._streams[stream]
            node = await parent.add_variable(self._idx, name, value, varianttype=vtype)
            self._vars[(stream, name)] = node
        return node

    async def start(self) -> None:
        from asyncua import ua
        from asyncua.server.server import Server
        from asyncua.ua.object_ids import ObjectIds

        # asyncua logs every session, subscription and node at INFO: thousands of lines a
        # run. Quiet it unless its level was set on purpose.
        ua_log = logging.getLogger("asyncua")
        if ua_log.level == logging.NOTSET:
            ua_log.setLevel(logging.WARNING)
        self._ua = ua
        server = Server()
        await server.init()
        server.set_endpoint(self.cfg.endpoint)
        server.set_server_name(f"EdgeTier {self.ctx.node} {self.ctx.pipeline}")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        self._idx = await server.register_namespace(self.cfg.namespace)
        root = await server.nodes.objects.add_object(self._idx, self.ctx.pipeline)
        self.root = root
        self._streams = {}
        I64, I32, U64, S = (
            ua.VariantType.Int64,
            ua.VariantType.Int32,
            ua.VariantType.UInt64,
            ua.VariantType.String,
        )
        for sid in self.ctx.stream_ids:
            self._streams[sid] = await root.add_object(self._idx, sid)
            await self._variable(sid, "Frames", 0, U64)
            await self._variable(sid, "Objects", 0, I32)
            await self._variable(sid, "LastEvent", "", S)
            for line in self.ctx.lines:
                await self._variable(sid, f"Count_{line}_In", 0, I64)
                await self._variable(sid, f"Count_{line}_Out", 0, I64)
            for zone in self.ctx.zones:
                await self._variable(sid, f"Occupancy_{zone}", 0, I32)
        self.event_type = await server.create_custom_event_type(
            self._idx,
            "EdgeTierEvent",
            ObjectIds.BaseEventType,
            [("Kind", S), ("Stream", S), ("EdgeTierId", S), ("Payload", S)],
        )
        self._gen = await server.get_event_generator(self.event_type, root.nodeid)
        await server.start()
        self._server = server
        log.info("opcua %s: serving %s", self.name, self.cfg.endpoint)

    async def _set(self, stream: str, name: str, value: Any, vtype: Any) -> None:
        if stream not in self._streams:
            return
        node = await self._variable(stream, name, value, vtype)
        await node.write_value(value, vtype)

    async def handle(self, events: list[Event]) -> None:
        ua = self._ua
        for e in events:
            if not self.accepts(e):
                continue
            sid, data = e.stream_id, e.data
            if e.kind == "line_crossing":
                line = data["line"]
                await self._set(
                    sid, f"Count_{line}_In", int(data["count_in"]), ua.VariantType.Int64
                )
                await self._set(
                    sid, f"Count_{line}_Out", int(data["count_out"]), ua.VariantType.Int64
                )
            elif e.kind == "counts":
                for line, c in data.get("lines", {}).items():
                    await self._set(sid, f"Count_{line}_In", int(c["in"]), ua.VariantType.Int64)
                    await self._set(sid, f"Count_{line}_Out", int(c["out"]), ua.VariantType.Int64)
                for zone, z in data.get("zones", {}).items():
                    await self._set(
                        sid, f"Occupancy_{zone}", int(z["occupancy"]), ua.VariantType.Int32
                    )
            elif e.kind in ("zone_enter", "zone_exit"):
                await self._set(
                    sid, f"Occupancy_{data['zone']}", int(data["occupancy"]), ua.VariantType.Int32
                )
            payload = e.to_json(node=self.ctx.node, pipeline=self.ctx.pipeline).decode()
            await self._set(sid, "LastEvent", payload, ua.VariantType.String)
            ev = self._gen.event
            ev.Kind, ev.Stream, ev.EdgeTierId, ev.Payload = e.kind, sid, e.id, payload
            await self._gen.trigger(message=f"{e.kind} on {sid}")

    async def frame(self, frame: FramePacket) -> None:
        sid = frame.meta.stream_id
        now = time.monotonic()
        if now - self._last_frames_write.get(sid, 0.0) < 0.5:
            return
        self._last_frames_write[sid] = now
        stats = self.ctx.stats().get(sid)
        count = stats.frames_out if stats is not None else frame.meta.frame_index + 1
        await self._set(sid, "Frames", int(count), self._ua.VariantType.UInt64)
        await self._set(sid, "Objects", len(frame.detections), self._ua.VariantType.Int32)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
