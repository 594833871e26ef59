"""A replica serving an image another replica admitted, from the target registry.

With ``target: {kind: registry}`` and replicas on one database, the target
is the admitted store of record and each replica's admitted store is a
cache. A replica asked for an image that is admitted (the shared database
says so) and published (it says that too) but that its own store lacks
fetches the manifest and blobs from the target instead of verifying the
image again from the upstream.

What the target sends is a claim, never served as such: the manifest is
hashed and must equal its digest, and every blob is staged, then hashed
again as it moves into the admitted store (``take_from_staging``), exactly
as an admission's content is. Any mismatch, and any failure to read the
target, is logged and the pull goes on as if the cache had missed: it
verifies the image from the upstream.
"""

from __future__ import annotations

import asyncio
import logging

from pullguard.gateway.decisions import DecisionLog
from pullguard.gateway.publish import Publisher
from pullguard.gateway.stores import AdmittedStore
from pullguard.services.runtime.digests import computed_digest
from pullguard.services.runtime.errors import StagingError, TargetError
from pullguard.services.runtime.staging import StagingStore

log = logging.getLogger("pullguard.gateway")


async def restore_from_target(
    publisher: Publisher,
    decisions: DecisionLog,
    admitted: AdmittedStore,
    staging: StagingStore,
    session: str,
    repository: str,
    digest: str,
) -> bool:
    """Bring admitted ``repository@digest`` from the target into the store, verified.

    Returns whether it did. ``session``: a staging session of its own (it is
    discarded here), in this replica's folder.
    """
    if decisions.published(publisher.key, repository, digest) != digest:
        return False  # never published: nothing in the target to trust it by
    name = publisher.target.repository(repository)
    blobs = decisions.manifest_blobs(repository, digest)
    try:
        data = await publisher.client.get_manifest(name, digest)
        if data is None:
            return False
        if computed_digest(data, digest) != digest:
            raise StagingError(f"manifest {digest} from the target hashes to another digest")
        missing = [b for b in blobs if admitted.verified_blob(b) is None]
        for blob in missing:
            with staging.writer(session) as writer:
                await publisher.client.get_blob(name, blob, writer.write)
                writer.commit(blob)
        with staging.writer(session) as writer:
            writer.write(data)
            writer.commit(digest)
        # Hashed again as they move in: blobs first, the manifest last.
        for key in [*missing, digest]:
            await asyncio.to_thread(admitted.take_from_staging, staging, session, key)
    except TargetError as exc:
        log.warning("%s@%s not read from the target (%s): verifying it", repository, digest, exc)
        return False
    except StagingError as exc:
        log.error("%s@%s from the target is not what was admitted: %s", repository, digest, exc)
        return False
    finally:
        staging.discard(session)
    log.info("%s@%s brought from the target, verified", repository, digest)
    return True
