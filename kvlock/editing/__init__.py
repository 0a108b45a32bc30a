"""One edit from request to frames: the request (``request``), what it resolves to for a model (``job``),
the loaded model made ready (``runtime``), one temporal window (``window``), the part of its decode the
composite reads (``decode_box``), putting the result back into the source (``composer`` over
``compositing``), and the public :class:`~.editor.Editor`."""
