"""Streamlit helpers shared by the pages: labels, cached lookups, panels. Only pages import this."""
