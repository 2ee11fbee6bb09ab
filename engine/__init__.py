"""The engine: the trainer, the predictor and the evaluation loop, which ask the task and never which task it is;
and the command-line pieces the drivers share."""
