"""All logic of the PEFT dashboard, importable without Streamlit.

Heavy libraries (torch, transformers, llama_cpp) are imported inside the functions and job
processes that need them, never at module import.
"""
