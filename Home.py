"""Entry point of the dashboard: `streamlit run Home.py`. Navigation over pages/."""

import streamlit as st

st.set_page_config(page_title="PEFT Dashboard", page_icon="🧪", layout="wide")
navigation = st.navigation(
    [
        st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
        st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
        st.Page("pages/compare.py", title="Compare", icon=":material/compare_arrows:"),
        st.Page("pages/study_cards.py", title="Study cards", icon=":material/style:"),
    ]
)
navigation.run()
