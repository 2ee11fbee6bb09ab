"""Inference: the one predictor (``inference.predictor``) that eval, test, prediction and validation share. It knows
no task: its callers say how a model sees its inputs."""
