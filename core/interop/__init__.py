"""Runs in and out of other tools: a Trainer output folder and TensorBoard event files become run
folders; run folders become TensorBoard event files (with hparams, for its HParams view).

Everything read here may come from elsewhere and is treated as hostile: archives are bounded and
extracted without links or paths that leave their folder, no pickle is ever loaded, every file is
opened as core.store.files opens a run's files, and a run appears whole or not at all.
"""
