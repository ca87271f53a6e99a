"""Code shared by both services: logging, config parsing, database migrations."""
