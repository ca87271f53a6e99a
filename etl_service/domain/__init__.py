"""Pure ETL logic: what a valid login event is, and how it becomes a row."""
