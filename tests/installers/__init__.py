"""installers tests."""
