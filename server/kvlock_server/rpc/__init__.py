"""The gRPC layer: the servicer, message translation (``wire``), status codes, security, admission bounds,
the watchers' change feed, uploads, and the event loop it all runs on. It holds no job logic of its own."""
