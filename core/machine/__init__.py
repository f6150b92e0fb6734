"""This machine: GPUs, memory, disk, installed packages and what they make possible."""
