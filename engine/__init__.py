"""The engine: the trainer and the evaluation loop, which ask the task and never which task it is; the
hyper-parameter search; and the command-line pieces the drivers share. The predictor is below, in ``inference``."""
