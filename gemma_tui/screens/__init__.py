"""Screens shown over the studio."""
