"""Entry points of the ETL: the command line (`run` service mode and `drain`)."""
