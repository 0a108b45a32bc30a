"""Jobs in the server's own terms, no gRPC: what a job is (``model``), what the queue asks of an executor
(``contract``), the store, the runner (the queue), the media a job reads and writes, the checks a submission
passes, and the media roots clients may name files under."""
