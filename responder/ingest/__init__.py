"""The sources: webhooks (Okta, Entra, Shared Signals) and SIEM alerts on Kafka, each turned into
canonical events and handed off durably before anything is decided."""
