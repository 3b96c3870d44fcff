"""The studio's panes, one widget per file."""
