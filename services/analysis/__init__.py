"""services/analysis."""
