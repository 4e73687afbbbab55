"""The HTTP surface: admin API, probes, metrics and documentation pages."""
