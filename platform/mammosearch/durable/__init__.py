"""Writes that survive a crash or a full disk: atomic files, file locks, crash points."""
