"""The denoising loop: what a step runs (``plan``), the passes that run it (``passes``), on which tokens
(``layout``), and the loop itself (``loop``)."""
