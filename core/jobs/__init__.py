"""Jobs: training, evaluation and export as processes of their own, with one lifecycle.

- `protocol`: what a job's own code sees: JobControl (stages, stop request), JobStopped, Progress;
- `lifecycle`: `run_job` inside the job process, and launching, watching and stopping jobs;
- `slot`: the machine's job slot, one job at a time;
- `processes`: which process a job is, and whether it is still alive.
"""
