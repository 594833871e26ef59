"""services/format."""
