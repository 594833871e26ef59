"""services/analysis: request analysis (grammar, upstream, deny globs, rule, pins)."""
