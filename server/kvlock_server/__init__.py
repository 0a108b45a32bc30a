"""The service side of KV-Lock: the gRPC server, its executors and the ``kvlock`` command line.

Importing it registers the research world's test models (``tiny-random``) with the engine's loader, so
every server, worker and command line can name them.
"""

import kvlock.world  # noqa: F401  (registers tiny-random)
