"""services/source."""
