"""Health probes, scheduling, status aggregation, SLA and business impact."""
