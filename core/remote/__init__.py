"""Runs beyond this machine: a runs root mirrored to a folder or a Hugging Face bucket
(stores, sync), with each file written by one side only."""
