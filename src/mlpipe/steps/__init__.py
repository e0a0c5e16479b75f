"""The pipeline's steps, in order: ingest -> features -> train -> evaluate -> package -> register.

Each module does one step with plain functions of DataFrames and configs; ``mlpipe.pipeline`` wires them
together and owns the tracking.
"""
