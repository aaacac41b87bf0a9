"""The gRPC server of each serving process: grpc.aio on LSTM_GRPC_PORT, beside uvicorn on the same event loop.

It serves inference.GRPCInferenceService (service/grpc_servicer.py), the standard grpc.health.v1 service
(so Kubernetes gRPC probes work: the empty service name is SERVING while the process is up, and
inference.GRPCInferenceService while a model is loaded) and server reflection (for grpcurl). The app's
lifespan starts it after the components and stops it before closing them, draining in-flight calls for up
to LSTM_DRAIN_TIMEOUT. Messages are bounded by LSTM_MAX_BODY_BYTES, as REST bodies are.

With several workers each one's server listens on the same port with SO_REUSEPORT, and the kernel spreads
new connections over them, as for REST (service/sockets.py); the supervisor holds the port reserved
(service/__main__.py). Alone, a server binds the port exclusively.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any, cast

import grpc
from google.protobuf.descriptor import FileDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from service.components import Components
from service.grpc_proto.pool import POOL
from service.grpc_servicer import SERVICE_NAME, InferenceServicer, rpc_handlers

log = logging.getLogger("service.grpc")
# grpc_health's asyncio servicer (health.aio.HealthServicer); grpc-stubs' grpc_health stubs predate it.
HealthServicer: Any = cast(Any, health).aio.HealthServicer


class GrpcBindError(OSError):
    """The gRPC port cannot be listened on (taken, or not an address of this host)."""


def _add_to_pool(file: FileDescriptor) -> None:
    """Put a standard service's proto into our pool, so that reflection describes it beside ours."""
    try:
        POOL.FindFileByName(file.name)
    except KeyError:
        POOL.AddSerializedFile(file.serialized_pb)


@dataclass
class GrpcServer:
    """A started server and the task that keeps its health status in step with the data plane."""

    server: grpc.aio.Server
    port: int
    health: Any  # a HealthServicer
    watch: asyncio.Task[None]

    @classmethod
    async def start(cls, components: Components) -> GrpcServer:
        settings = components.settings
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", settings.max_body_bytes),
                ("grpc.so_reuseport", 1 if isinstance(settings.workers, int) and settings.workers > 1 else 0),
            ]
        )
        server.add_generic_rpc_handlers((rpc_handlers(InferenceServicer(components)),))
        health_servicer = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        for file in (health_pb2.DESCRIPTOR, reflection_pb2.DESCRIPTOR):
            _add_to_pool(file)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server, pool=POOL
        )
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        address = f"{host}:{settings.grpc_port}"
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as exc:  # grpc's way of saying the bind failed
            raise GrpcBindError(f"cannot listen for gRPC on {address}: {exc}") from None
        await server.start()
        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        watch = asyncio.create_task(_keep_health(components, health_servicer), name="grpc-health")
        log.info("gRPC (Open Inference Protocol) on %s:%d", settings.host, port)
        return cls(server, port, health_servicer, watch)

    async def stop(self, grace: float) -> None:
        """Refuse new calls, let those in flight finish for up to `grace` seconds, then cancel what is left."""
        self.watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.watch
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


async def _keep_health(components: Components, servicer: Any) -> None:
    """inference.GRPCInferenceService is SERVING while a model is loaded (readiness), checked at the poll interval."""
    serving = health_pb2.HealthCheckResponse.SERVING
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    while True:
        await servicer.set(SERVICE_NAME, serving if components.dataplane.ready else not_serving)
        await asyncio.sleep(components.settings.poll_interval)
