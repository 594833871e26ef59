"""One pull through the six layers: :meth:`Pipeline.run` reads as the steps below.

Order matters for cost and for safety:

1. analysis makes a plan, or refuses before any upstream traffic;
2. fetcher stages the manifest (a tag is resolved exactly once);
3. a manifest already admitted under this policy is served without
   verifying again;
4. format and hashverify judge the manifest bytes; then source and
   signature, which need format's parse and hashverify's digest. All of this
   happens before any blob is downloaded, so a bad image costs no layer traffic;
5. fetcher stages the blobs; hashverify and format re-read them;
6. only when every step allowed, and the digests the fetcher streamed equal
   the descriptors, are the staged objects hashed again and moved into the
   admitted store, manifest last; the admission and its decision row then
   commit in one transaction, and index.json comes last. A refusal whose
   every step ran sends the staging session to quarantine with its report;
   a pull that could not finish (layer error, full disk) is discarded;
7. with a registry target, the admitted content is pushed there (blobs,
   then the manifest) before the admission is recorded: a pull whose push
   failed is a retryable error (503), never served as published.

Any exception, timeout or missing service ends in a refusal (fail closed).
Outages — a layer down, hung, crashing or not serving, an upstream down or
without the content, a target that refused — are reported as such
(retryable), never as a verdict: never cached, never quarantined.

Where each step lives:

- 1 (plan), 2 (stage the manifest), 4 (judge the manifest): :mod:`.manifest`,
  with signatures and the index unit in :mod:`.signatures`;
- 3 (serve cached), 6 (admit or quarantine), 7 (publish): :mod:`.admission`,
  one interface over the admitted store, the database and the target;
- 5 (stage and judge blobs): :mod:`.blobs`;
- how a pull ended (:mod:`.outcome`), turned into its verdict and recorded
  in one place, ``Pipeline._conclude``;
- the state of one pull: :mod:`.one`; releases and re-evaluations run the
  same steps (:mod:`.reevaluate`, ``gateway.release``).
"""

from pullguard.gateway.pull.manifest import MAX_INDEX_DEPTH
from pullguard.gateway.pull.one import LayerClients, Pull, Puller, PullResult
from pullguard.gateway.pull.pipeline import Pipeline, Runner
from pullguard.gateway.pull.reevaluate import Reevaluated

__all__ = [
    "MAX_INDEX_DEPTH",
    "LayerClients",
    "Pipeline",
    "Pull",
    "Puller",
    "PullResult",
    "Reevaluated",
    "Runner",
]
