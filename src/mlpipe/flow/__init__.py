"""Where a run's work happens, so that ``mlpipe.pipeline`` can say in one function what happens in what order:
``lanes`` (the training worker process, two checks threads, the tracking thread) and the work each model's
checks and child run do on them (``model_work``), and what a run returns (``results``). May import every
package but serving."""
