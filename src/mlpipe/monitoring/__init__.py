"""Monitoring: the loop from a served forecast to the truth that arrives ``horizon`` later.

- ``log``: every forecast answered (``GET /forecast``, ``POST /predict``, ``mlpipe predict``) is written to the
  workspace's forecast log; writing it never fails or holds up an answer.
- ``truth``: logged forecasts joined with the observations for their ``forecast_for``, and persistence on the
  same rows.
- ``drift``: input and prediction drift against a reference of the same season.
- ``monitor``: ``mlpipe monitor``: performance, drift and health per model version and group.
- ``page``: the HTML monitoring page.

Serving imports ``log`` alone (the standard library and numpy)."""
