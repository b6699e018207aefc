"""Who may use the archive, and the audit of what they saw."""
