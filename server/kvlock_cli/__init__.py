"""The ``kvlock`` command: the top floor, over the engine (``edit``, ``calibrate``, ``models``), the server
(``serve``) and the bridge (``submit``, ``jobs``, ``cancel``, ``fetch``). Nothing imports it."""
