"""The service: sources -> decision point -> enforcement point, journaled, with its admin API."""
