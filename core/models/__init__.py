"""Models for generation: a run's model in transformers, GGUF files in llama-cpp, and where GGUFs come from."""
