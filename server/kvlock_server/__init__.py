"""The KV-Lock server: the gRPC layer (``rpc``), jobs and their store and queue (``jobs``), and where jobs run
(``executors``: in this process, over a GPU group, or on a Ray farm); ``app`` assembles them."""
