"""The run folder on disk: where things live, crash-safe files, runs, the lab's seed runs and experiments_log.csv."""
