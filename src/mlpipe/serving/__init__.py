"""Using registered models: over HTTP (``mlpipe serve``) and in batch (``mlpipe predict``). May import config,
errors, console, graph, featurize (the feature engine) and store; never steps or training (serving loads no
training code).

    model.py       the served model (one onnxruntime session) and the slot a swap replaces it in
    schemas.py     request schema generated from the model's features; response schemas
    middleware.py  bearer token, request-body limit
    follow.py      alias following (poll the registry, swap the new version in)
    app.py         the FastAPI app: /predict, /health, /metadata, and /observations, /forecast
    forecast.py    forecasts from stored raw observations: the observation schema, the look-back read back
    server.py      settings and uvicorn
    batch.py       ``mlpipe predict``: CSV or Parquet in chunks through one onnxruntime session
    raw.py         ``mlpipe predict`` on raw observations: features per group, look-back carried across chunks
"""
