"""Training: the run config, presets, the plan for this machine, data, backends and the training job."""
