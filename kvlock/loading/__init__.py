"""Finding and loading models, offline: the model folder's checks (``checkpoint``), loading (``load``), the
configured folders (``catalog``) and the config file they are recorded in (``config_file``)."""
