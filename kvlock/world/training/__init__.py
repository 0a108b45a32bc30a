"""Training the project's own small Wan-architecture model on procedural clips (GPU machine)."""
