"""Data sources besides files: databases (sql)."""
