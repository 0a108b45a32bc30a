"""The service side of KV-Lock: the ``kvlock`` command line (and, later, the gRPC server)."""
