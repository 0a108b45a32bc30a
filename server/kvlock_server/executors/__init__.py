"""Where jobs run: what every executor shares (``base``: the work order, running one job on an editor, the
editor cache), in this process (``inprocess``), over the GPUs of a group (``group``, ``group_rank``), or on a
Ray farm (``ray``, ``ray_pool``, ``ray_worker``, ``ray_options``)."""
