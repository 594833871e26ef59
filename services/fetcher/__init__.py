"""services/fetcher."""
