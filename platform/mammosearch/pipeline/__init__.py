"""Pending images -> vectors -> indexes, and the upkeep that keeps them whole (claims, health)."""
