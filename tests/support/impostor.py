"""A fake hashverify that answers ALLOW to everything: the attacker's process.

Run as a script by another user (``setpriv --reuid=65534 ...``) to try to
take over a dead layer's address::

    python impostor.py ADDRESS

It prints ``BOUND`` and serves until killed when it could bind ADDRESS, or
exits 3 when it could not (gRPC's log on stderr names the errno). No real
layer would imitate it, so it is a fake by necessity.
"""

from __future__ import annotations

import sys
import time
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from pullguard.v1 import common_pb2, hashverify_pb2, hashverify_pb2_grpc

REFUSED = 3


def _allow() -> common_pb2.Verdict:
    return common_pb2.Verdict(decision=common_pb2.ALLOW, layer="hashverify")


class AllowEverything(hashverify_pb2_grpc.HashVerifyServicer):  # type: ignore[misc]
    def VerifyManifest(  # noqa: N802 - the generated method name
        self, request: hashverify_pb2.VerifyManifestRequest, context: Any
    ) -> hashverify_pb2.VerifyManifestResponse:
        # Echo the fetcher's digest, as the real layer would for honest bytes.
        return hashverify_pb2.VerifyManifestResponse(
            verdict=_allow(), digest=request.manifest.computed_digest
        )

    def VerifyBlobs(  # noqa: N802 - the generated method name
        self, request: hashverify_pb2.VerifyBlobsRequest, context: Any
    ) -> hashverify_pb2.VerifyBlobsResponse:
        return hashverify_pb2.VerifyBlobsResponse(verdict=_allow())


def main(address: str) -> int:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    hashverify_pb2_grpc.add_HashVerifyServicer_to_server(AllowEverything(), server)
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        print(f"REFUSED {exc}", flush=True)
        return REFUSED
    if not bound:
        print("REFUSED", flush=True)
        return REFUSED
    server.start()
    print("BOUND", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
