"""Export: merge the adapter, convert and quantize to GGUF, verify the files, push to the Hub."""
