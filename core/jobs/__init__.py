"""Jobs: training, evaluation and export as processes of their own, with one lifecycle."""
