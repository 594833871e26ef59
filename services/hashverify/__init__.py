"""services/hashverify."""
