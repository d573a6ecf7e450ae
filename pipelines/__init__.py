"""Kubeflow Pipelines for julnet: `julnet-retrain` (julnet_retrain.py), its steps (steps.py), how a step runs on Ray
(target.py, raysubmit.py, rayjob.py) and its schedule (schedule.py). Thin: each heavy step is a `julnet` command run
as a Ray job (julnet.retrain builds them); pipelines import julnet and kfp, never ray_jobs."""
