"""services/signature."""
