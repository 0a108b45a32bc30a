"""plugins tests."""
