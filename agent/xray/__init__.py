"""xray."""
