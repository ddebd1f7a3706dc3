"""What touches user code: auto-instrumentation, the business spans API, enrichers, PII scrubbing."""
