"""Read-only probes of nodes over SSH (host keys verified): facts for status and doctor."""
