"""Alerts: what raises them, how they are grouped, silenced and routed, and their delivery (docs/alerts.md)."""
