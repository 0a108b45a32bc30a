"""Media I/O on PyAV: exact frame ranges in, NLE-ready files out."""
