"""services/runtime."""
