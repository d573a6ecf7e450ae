"""Kubeflow Pipelines for julnet: `julnet-retrain` (julnet_retrain.py), its steps (steps.py), how a step runs on Ray
(raysubmit.py, rayjob.py) and its schedule (schedule.py). Thin: the work is ray_jobs/* and the julnet library."""
